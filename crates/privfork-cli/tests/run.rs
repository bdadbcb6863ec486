//! `privfork run`, as a user runs it. These tests run as root (they drop
//! to nobody) and fail loudly otherwise.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

use std::process::{Command, Output};

fn privfork_run(args: &[&str]) -> Output {
    assert!(
        rustix::process::geteuid().is_root(),
        "privfork run tests drop to nobody: run them as root"
    );
    Command::new(env!("CARGO_BIN_EXE_privfork"))
        .arg("run")
        .args(args)
        .output()
        .expect("run privfork")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A directory of the test's own, writable by nobody, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::PermissionsExt;
        let r = std::hash::RandomState::new().build_hasher().finish();
        let p = std::env::temp_dir().join(format!("privfork-run-{tag}-{r:016x}"));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        Self(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dynamic_program_starts_as_nobody_under_stdio() {
    let _limit = time_limit!();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio", "--", "/bin/true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn runs_as_the_user() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/usr/bin/id",
        "-u",
    ]);
    assert_eq!(stdout(&o).trim(), "65534", "{}", stderr(&o));
}

#[test]
fn exit_status_and_signals_pass_through() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath proc",
        "--",
        "/bin/sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(code(&o), 128 + 9, "{}", stderr(&o));
}

#[test]
fn the_program_cannot_exec_again() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        "exec /bin/true",
    ]);
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains("Function not implemented"),
        "{}",
        stderr(&o)
    );
    // Unless exec is promised.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath exec",
        "-v",
        "rx:/usr/bin",
        "--",
        "/bin/sh",
        "-c",
        "exec /bin/true",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn violation_modes() {
    let _limit = time_limit!();
    let dir = Dir::new("modes");
    let target = format!("echo hi > {}/f", dir.path());
    // kill: SIGSYS.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert_eq!(code(&o), 128 + libc::SIGSYS, "{}", stderr(&o));
    // errno: the shell sees EPERM and says so.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "errno",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    assert!(stderr(&o).contains("not permitted"), "{}", stderr(&o));
    // log: names the call and the promises that allow it.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "--mode",
        "log",
        "--",
        "/bin/sh",
        "-c",
        &target,
    ]);
    let e = stderr(&o);
    assert!(e.contains("openat") && e.contains("cpath"), "{e}");
    assert!(!dir.0.join("f").exists());
}

#[test]
fn files_in_the_unveiled_directory_only() {
    let _limit = time_limit!();
    let dir = Dir::new("files");
    let script = format!(
        "echo hello > {d}/f && cat {d}/f && mkdir {d}/sub && mv {d}/f {d}/sub/g && rm {d}/sub/g && rmdir {d}/sub",
        d = dir.path()
    );
    let unveil = format!("rwc:{}", dir.path());
    // The shell runs cat, mkdir, mv...: it needs proc and exec, and the
    // programs it runs need unveiling for execution.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath proc exec",
        "-v",
        &unveil,
        "-v",
        "rx:/usr/bin",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "hello");
    // Outside it: Landlock refuses.
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath wpath cpath",
        "-v",
        &unveil,
        "--",
        "/bin/cat",
        "/etc/hostname",
    ]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

#[test]
fn the_program_sees_its_sandbox() {
    let _limit = time_limit!();
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        "r:/proc",
        "--",
        "/bin/cat",
        "/proc/self/status",
    ]);
    let s = stdout(&o);
    let field = |n: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(n))
            .unwrap_or_else(|| panic!("no {n} in {s}; stderr {}", stderr(&o)))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "1");
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(set), "0000000000000000", "{set}");
    }
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534");
}

#[test]
fn bad_input_has_its_own_code_and_message() {
    let _limit = time_limit!();
    for (args, want_code, want_text) in [
        (vec!["-p", "stdio bogus", "--", "/bin/true"], 121, "bogus"),
        (vec!["-p", "rpath", "--", "/bin/true"], 121, "stdio"),
        (vec!["-v", "rz:/tmp", "--", "/bin/true"], 122, "rz:/tmp"),
        (
            vec!["-v", "r:/no/such/pf", "--", "/bin/true"],
            122,
            "/no/such/pf",
        ),
        (
            vec!["-u", "no-such-user-pf", "--", "/bin/true"],
            123,
            "no-such-user-pf",
        ),
        (vec!["--", "/no/such/prog-pf"], 127, "/no/such/prog-pf"),
        (vec!["--", "no-such-prog-pf"], 127, "no-such-prog-pf"),
    ] {
        // As root, -u is required (checked on its own below).
        let mut args = args;
        if args[0] != "-u" {
            args.splice(0..0, ["-u", "nobody"]);
        }
        let o = privfork_run(&args);
        assert_eq!(code(&o), want_code, "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.lines().count() == 1 && e.contains(want_text),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn fds_left_open_by_the_caller_do_not_reach_the_program() {
    let _limit = time_limit!();
    // A root-only file open on fd 7 in privfork's caller: the program must
    // not be able to read it through the inherited fd.
    let dir = Dir::new("fds");
    let secret = dir.0.join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let script = format!(
        "exec 7<{} && exec {} run -u nobody -p 'stdio rpath' -- /bin/sh -c 'read l <&7; echo \"got:$l\"'",
        secret.display(),
        env!("CARGO_BIN_EXE_privfork")
    );
    let o = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(!out.contains("top secret"), "the program read fd 7: {out}");
    assert!(
        stderr(&o).contains("7"),
        "expected a bad-fd error: {}",
        stderr(&o)
    );
}

#[test]
fn scripts_run_when_their_interpreter_is_unveiled() {
    let _limit = time_limit!();
    let dir = Dir::new("script");
    let script = dir.0.join("s.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 5\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = script.to_str().unwrap();
    // The script names its interpreter; privfork does not unveil what a
    // script names. Without the caller's unveil: cannot execute.
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", path]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        "rx:/bin/sh",
        "--",
        path,
    ]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
}

#[test]
fn root_must_name_the_user() {
    let _limit = time_limit!();
    // Without -u, root's program would run as uid 0.
    for args in [
        vec!["-p", "stdio", "--", "/bin/true"],
        vec!["-g", "nogroup", "-p", "stdio", "--", "/bin/true"],
    ] {
        let o = privfork_run(&args);
        assert_eq!(code(&o), 123, "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.lines().count() == 1 && e.contains("-u nobody"), "{e}");
    }
    // Nor as root by name or number.
    for user in ["root", "0"] {
        let o = privfork_run(&["-u", user, "-p", "stdio", "--", "/bin/true"]);
        assert_eq!(code(&o), 123, "-u {user}: {}", stderr(&o));
        assert!(stderr(&o).contains("-u nobody"), "{}", stderr(&o));
    }
}
