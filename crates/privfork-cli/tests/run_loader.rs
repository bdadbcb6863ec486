//! What `privfork run` unveils for the dynamic loader: exactly the
//! program's interpreter and the libraries it needs (found as glibc finds
//! them), nothing else in the library directories; and executable stacks
//! only with `prot_exec`. Runs as root (drops to nobody); compiles small C
//! programs with `cc`.

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{code, privfork_run, random, stderr, stdout};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of the test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("privfork-loader-{tag}-{:016x}", random()));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cc` with `args` in `dir`.
fn cc(dir: &Dir, args: &[&str]) {
    let o = Command::new("cc")
        .current_dir(&dir.0)
        .args(args)
        .output()
        .expect("cc (gcc) is needed for these tests");
    assert!(o.status.success(), "cc {args:?}: {}", stderr(&o));
}

/// A program that calls `f()` from `libf.so.1` and reports whether it can
/// read the file named by its first argument.
const MAIN_C: &str = r#"
#include <stdio.h>
int f(void);
int main(int argc, char **argv) {
    FILE *x = argc > 1 ? fopen(argv[1], "r") : NULL;
    printf("%d %s\n", f(), x ? "readable" : "unreadable");
    return 0;
}
"#;

/// `dir/lib/libf.so.1.0` (soname `libf.so.1`, reached by the symlinks
/// `libf.so.1` and `libf.so`), `dir/lib/libunneeded.so`, and `dir/main`
/// linked with `extra` flags.
fn build_program(dir: &Dir, extra: &[&str]) -> PathBuf {
    std::fs::create_dir(dir.join("lib")).unwrap();
    dir.write("f.c", "int f(void) { return 3; }\n");
    dir.write("main.c", MAIN_C);
    cc(
        dir,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libf.so.1",
            "-o",
            "lib/libf.so.1.0",
            "f.c",
        ],
    );
    std::os::unix::fs::symlink("libf.so.1.0", dir.join("lib/libf.so.1")).unwrap();
    std::os::unix::fs::symlink("libf.so.1", dir.join("lib/libf.so")).unwrap();
    cc(
        dir,
        &["-shared", "-fPIC", "-o", "lib/libunneeded.so", "f.c"],
    );
    let mut args = vec!["-o", "main", "main.c", "-Llib", "-lf"];
    args.extend_from_slice(extra);
    cc(dir, &args);
    dir.join("main")
}

#[test]
fn real_programs_run_with_their_libraries_only() {
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
    let dir = Dir::new("ls");
    dir.write("hello", "");
    let unveil = format!("r:{}", dir.0.display());
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        &unveil,
        "--",
        "/bin/ls",
        dir.0.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&o).trim(), "hello", "{}", stderr(&o));
    // Python's own modules are data, not libraries: the caller unveils
    // them (here: the directory holding the standard library).
    let stdlib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("encodings").is_dir() && p.to_string_lossy().contains("python3"));
    if let Some(stdlib) = stdlib {
        let unveil = format!("r:{}", stdlib.display());
        let o = privfork_run(&[
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            "-v",
            &unveil,
            "--",
            "/usr/bin/python3",
            "-c",
            "print(1)",
        ]);
        assert_eq!(stdout(&o).trim(), "1", "{}", stderr(&o));
    }
}

/// A file the test creates in a library directory, removed on drop (also
/// when the test fails).
struct SystemFile(PathBuf);

impl Drop for SystemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn other_files_in_library_directories_stay_unreadable() {
    let _limit = time_limit!();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = ["/usr/lib/x86_64-linux-gnu", "/usr/lib"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .unwrap();
    let path = PathBuf::from(format!("{dir}/privfork-test-{:016x}", random()));
    // create_new: never overwrites a file of the system.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .unwrap();
    let _guard = SystemFile(path.clone());
    f.write_all(b"world-readable\n").unwrap();
    drop(f);
    let p = path.to_str().unwrap();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", "/bin/cat", p]);
    assert_ne!(code(&o), 0);
    assert!(!stdout(&o).contains("world-readable"));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    // Nor a real library cat does not need.
    let libz = "/usr/lib/x86_64-linux-gnu/libz.so.1";
    if Path::new(libz).exists() {
        let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", "/bin/cat", libz]);
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
    // Control: unveiled, the same file is read.
    let unveil = format!("r:{p}");
    let o = privfork_run(&[
        "-u",
        "nobody",
        "-p",
        "stdio rpath",
        "-v",
        &unveil,
        "--",
        "/bin/cat",
        p,
    ]);
    assert_eq!(stdout(&o), "world-readable\n", "{}", stderr(&o));
}

#[test]
fn origin_runpath_and_rpath_load_through_symlinks() {
    let _limit = time_limit!();
    for dtags in ["--enable-new-dtags", "--disable-new-dtags"] {
        let dir = Dir::new("origin");
        let dtags = format!("-Wl,{dtags}");
        let main = build_program(&dir, &["-Wl,-rpath,$ORIGIN/lib", &dtags]);
        let unneeded = dir.join("lib/libunneeded.so");
        let o = privfork_run(&[
            "-u",
            "nobody",
            "-p",
            "stdio rpath",
            "--",
            main.to_str().unwrap(),
            unneeded.to_str().unwrap(),
        ]);
        // libf.so.1 loads (through its symlink); the library beside it
        // that the program does not need stays unreadable.
        assert_eq!(stdout(&o), "3 unreadable\n", "{dtags}: {}", stderr(&o));
        assert_eq!(code(&o), 0, "{dtags}: {}", stderr(&o));
        // The loader finds $ORIGIN with readlink("/proc/self/exe"), which
        // the loader rules allow under stdio alone.
        let o = privfork_run(&[
            "-u",
            "nobody",
            "-p",
            "stdio",
            "--",
            main.to_str().unwrap(),
            unneeded.to_str().unwrap(),
        ]);
        assert_eq!(stdout(&o), "3 unreadable\n", "{dtags}: {}", stderr(&o));
        assert_eq!(code(&o), 0, "{dtags}: {}", stderr(&o));
    }
}

#[test]
fn a_missing_library_is_named_before_anything_runs() {
    let _limit = time_limit!();
    let dir = Dir::new("missing");
    let main = build_program(&dir, &["-Wl,-rpath,$ORIGIN/lib"]);
    std::fs::remove_file(dir.join("lib/libf.so.1.0")).unwrap();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio", "--", main.to_str().unwrap()]);
    assert_eq!(code(&o), 120, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.lines().count() == 1 && e.contains("libf.so.1") && e.contains(main.to_str().unwrap()),
        "{e}"
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn an_executable_stack_needs_prot_exec() {
    let _limit = time_limit!();
    let dir = Dir::new("execstack");
    dir.write("t.c", "int main(void) { return 0; }\n");
    cc(&dir, &["-o", "t", "t.c", "-z", "execstack"]);
    let t = dir.join("t");
    let t = t.to_str().unwrap();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio", "--", t]);
    assert_eq!(code(&o), 119, "{}", stderr(&o));
    assert!(stderr(&o).contains("prot_exec"), "{}", stderr(&o));
    let o = privfork_run(&["-u", "nobody", "-p", "stdio prot_exec", "--", t]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // A library with an executable stack: glibc's loader would mprotect
    // the stack executable, which the filter refuses without prot_exec.
    let dir = Dir::new("execstack-lib");
    std::fs::create_dir(dir.join("lib")).unwrap();
    dir.write("f.c", "int f(void) { return 3; }\n");
    dir.write("main.c", MAIN_C);
    cc(
        &dir,
        &[
            "-shared",
            "-fPIC",
            "-z",
            "execstack",
            "-o",
            "lib/libf.so",
            "f.c",
        ],
    );
    cc(
        &dir,
        &[
            "-o",
            "main",
            "main.c",
            "-Llib",
            "-lf",
            "-Wl,-rpath,$ORIGIN/lib",
        ],
    );
    let main = dir.join("main");
    let main = main.to_str().unwrap();
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath", "--", main]);
    assert_eq!(code(&o), 119, "{}", stderr(&o));
    assert!(stderr(&o).contains("libf.so"), "{}", stderr(&o));
    let o = privfork_run(&["-u", "nobody", "-p", "stdio rpath prot_exec", "--", main]);
    assert_eq!(stdout(&o), "3 unreadable\n", "{}", stderr(&o));
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// privfork checks the program and its libraries by name, and Landlock
/// opens them by name again: in a directory someone else can write, the
/// file could be swapped (for a symlink to `/`) in between. Such paths are
/// refused, with their own exit code, before anything starts.
#[test]
fn programs_and_libraries_in_directories_others_can_write_are_refused() {
    let _limit = time_limit!();
    let dir = Dir::new("untrusted");
    // An empty RUNPATH directory searched before the real one.
    std::fs::create_dir(dir.join("empty")).unwrap();
    let rpath = format!("-Wl,-rpath,{}:$ORIGIN/lib", dir.join("empty").display());
    let main = build_program(&dir, &[&rpath, "-Wl,--enable-new-dtags"]);
    let m = main.to_str().unwrap();
    let run = || privfork_run(&["-u", "nobody", "-p", "stdio", "--", m]);
    // Control: every directory root's own, mode 0755.
    let o = run();
    assert_eq!(stdout(&o), "3 unreadable\n", "{}", stderr(&o));
    // The program's directory writable by everyone.
    chmod(&dir.0, 0o777);
    let o = run();
    assert_eq!(code(&o), 117, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{} is writable", dir.0.display())),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    chmod(&dir.0, 0o755);
    // The directory a library is found in (through RUNPATH).
    chmod(&dir.join("lib"), 0o777);
    let o = run();
    assert_eq!(code(&o), 117, "{}", stderr(&o));
    assert!(stderr(&o).contains("/lib is writable"), "{}", stderr(&o));
    chmod(&dir.join("lib"), 0o755);
    // A RUNPATH directory searched first, where nothing is found yet.
    chmod(&dir.join("empty"), 0o777);
    let o = run();
    assert_eq!(code(&o), 117, "{}", stderr(&o));
    assert!(stderr(&o).contains("/empty is writable"), "{}", stderr(&o));
    chmod(&dir.join("empty"), 0o755);
    // Owned by nobody, even at mode 0755: nobody could swap it.
    std::os::unix::fs::chown(dir.join("lib"), Some(65534), None).unwrap();
    let o = run();
    assert_eq!(code(&o), 117, "{}", stderr(&o));
    std::os::unix::fs::chown(dir.join("lib"), Some(0), None).unwrap();
    let o = run();
    assert_eq!(stdout(&o), "3 unreadable\n", "{}", stderr(&o));
}

/// The paths an ELF file names (here `PT_INTERP`) are opened by root
/// before any sandbox: a device is never opened for reading (`/dev/watchdog`
/// would arm a watchdog), only looked at through an `O_PATH` fd.
#[test]
fn devices_an_elf_file_names_are_never_opened() {
    let _limit = time_limit!();
    let dir = Dir::new("devinterp");
    dir.write("t.c", "int main(void) { return 0; }\n");
    cc(&dir, &["-o", "t", "t.c", "-Wl,--dynamic-linker=/dev/null"]);
    let t = dir.join("t");
    let log = dir.join("strace.log");
    // privfork itself only (no -f): it resolves the loader's files before
    // it forks.
    let o = Command::new("strace")
        .args(["-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_privfork"))
        .args(["run", "-u", "nobody", "-p", "stdio", "--"])
        .arg(&t)
        .output()
        .expect("strace is needed for this test");
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/null") && stderr(&o).contains("not a regular file"),
        "{}",
        stderr(&o)
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    let opened: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("\"/dev/null\"") && !l.contains("O_PATH"))
        .collect();
    assert!(opened.is_empty(), "{opened:?}");
    // Looked at, through O_PATH.
    assert!(
        trace
            .lines()
            .any(|l| l.contains("\"/dev/null\"") && l.contains("O_PATH")),
        "{trace}"
    );
}
