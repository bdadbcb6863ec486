//! The compatibility table of docs/compat.md, run: each row's `privfork
//! run` line, exactly as the table prints it (placeholders filled in),
//! runs its real program in kill mode, and the program's output is checked;
//! then the same line (promises and unveils) with the program reading a
//! file outside its unveils shows the confinement — the file is readable
//! by nobody (a control shows it), so only Landlock keeps it out. A
//! program that is missing fails its row (`.ci/run` installs them). Run as
//! root (the programs drop to nobody).

#[path = "../../privfork/tests/time_limit/mod.rs"]
mod time_limit;
use time_limit::time_limit;

mod common;
use common::{code, random, stderr, stdout};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The table's rows: program, what it shows, and the `privfork run` line
/// (arguments after `privfork run`). Placeholders: `DIR` a directory of
/// the test's own (files `page.txt`, `lines.txt`, `tool.py`), `PY`
/// python's standard library, `PORT` a free TCP port on 127.0.0.1.
/// docs/compat.md prints each line as `privfork run LINE`; a test checks
/// it does, word for word.
const ROWS: &[(&str, &str, &str)] = &[
    ("ls", "list a directory", LS),
    ("cat", "print a file", CAT),
    ("id", "the user's ids and names", ID),
    ("sort", "sort a file", SORT),
    ("sha256sum", "hash a file", SHA256SUM),
    ("env", "the clean environment", ENV),
    ("python3", "a script with argparse and json", PYTHON),
    (
        "python3 -m http.server",
        "serve a directory on a port",
        HTTP_SERVER,
    ),
    (
        "curl",
        "fetch from a local server by a name in /etc/hosts",
        CURL,
    ),
    ("git init", "make a repository", GIT_INIT),
    ("git add", "stage a file", GIT_ADD),
    ("git commit", "commit", GIT_COMMIT),
    ("perl", "perl -e", PERL),
    ("busybox", "an applet (wc)", BUSYBOX),
    ("node", "node -e (Debian's nodejs)", NODE),
    ("sqlite3", "a database in an unveiled directory", SQLITE),
];

const LS: &str = "-u nobody -p 'stdio rpath' -v r:DIR -- /bin/ls DIR";
const CAT: &str = "-u nobody -p 'stdio rpath' -v r:DIR/page.txt -- /bin/cat DIR/page.txt";
const ID: &str = "-u nobody -p 'stdio getpw' -- /usr/bin/id";
const SORT: &str = "-u nobody -p 'stdio rpath' -v r:DIR -- /usr/bin/sort DIR/lines.txt";
const SHA256SUM: &str = "-u nobody -p 'stdio rpath' -v r:DIR -- /usr/bin/sha256sum DIR/page.txt";
const ENV: &str = "-u nobody -p stdio -- /usr/bin/env";
const PYTHON: &str =
    "-u nobody -p 'stdio rpath' -v r:PY -v r:DIR -- /usr/bin/python3 DIR/tool.py --name world";
const HTTP_SERVER: &str = "-u nobody -p 'stdio rpath inet' -v r:PY -v r:DIR -v r:/etc/mime.types --bind PORT -- /usr/bin/python3 -m http.server PORT --bind 127.0.0.1 --directory DIR";
const CURL: &str = "-u nobody -p 'stdio rpath inet dns' --connect PORT -- /usr/bin/curl -s http://localhost:PORT/page.txt";
const GIT: &str =
    "-u nobody -p 'stdio rpath wpath cpath fattr' -v rwc:DIR -v 'r?:/etc/gitconfig' --";
const GIT_INIT: &str = "-u nobody -p 'stdio rpath wpath cpath fattr' -v rwc:DIR -v 'r?:/etc/gitconfig' -- /usr/bin/git init -q DIR/repo";
const GIT_ADD: &str = "-u nobody -p 'stdio rpath wpath cpath fattr' -v rwc:DIR -v 'r?:/etc/gitconfig' -- /usr/bin/git -C DIR/repo add page.txt";
const GIT_COMMIT: &str = "-u nobody -p 'stdio rpath wpath cpath fattr' -v rwc:DIR -v 'r?:/etc/gitconfig' -- /usr/bin/git -C DIR/repo -c user.name=t -c user.email=t@example.com -c maintenance.auto=false commit -q -m first";
const PERL: &str = "-u nobody -p stdio -- /usr/bin/perl -e 'print qq(hello\\n)'";
const BUSYBOX: &str = "-u nobody -p 'stdio rpath' -v r:DIR -- /bin/busybox wc -l DIR/lines.txt";
const NODE: &str = "-u nobody -p 'stdio prot_exec' -v r:/etc/ssl/openssl.cnf -- /usr/bin/node -e 'console.log(6*7)'";
const SQLITE: &str = "-u nobody -p 'stdio rpath wpath cpath flock' -v rwc:DIR -- /usr/bin/sqlite3 DIR/db.sqlite 'create table t(x); insert into t values(42); select x from t;'";

/// The secret every confinement check tries to read.
const SECRET: &str = "the secret nobody may read here";

/// A row's world: its directory (writable by nobody) and a secret outside
/// it, readable by nobody.
struct World {
    dir: PathBuf,
    secret_dir: PathBuf,
    secret: PathBuf,
    py: String,
    port: u16,
}

impl World {
    fn new(tag: &str) -> Self {
        let mk = |name: &str| {
            let p = std::env::temp_dir()
                .join(format!("privfork-compat-{tag}-{name}-{:016x}", random()));
            std::fs::create_dir(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
            p
        };
        let dir = mk("dir");
        let secret_dir = mk("secret");
        let write = |p: &Path, text: &str| {
            std::fs::write(p, text).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        };
        write(&dir.join("page.txt"), "hello from page.txt\n");
        write(&dir.join("lines.txt"), "pear\napple\nfig\n");
        write(
            &dir.join("tool.py"),
            "import argparse, json\n\
             p = argparse.ArgumentParser()\n\
             p.add_argument('--name')\n\
             print(json.dumps({'hello': p.parse_args().name}))\n",
        );
        let secret = secret_dir.join("secret.txt");
        write(&secret, &format!("{SECRET}\n"));
        Self {
            dir,
            secret_dir,
            secret,
            py: python_lib(),
            port: free_port(),
        }
    }

    /// `line` with its placeholders filled in, split as a shell would.
    fn args(&self, line: &str) -> Vec<String> {
        let filled = line
            .replace("DIR", self.dir.to_str().unwrap())
            .replace("PY", &self.py)
            .replace("PORT", &self.port.to_string());
        split(&filled)
    }

    /// `privfork run LINE`, checking the program is installed.
    fn run(&self, line: &str) -> Output {
        let args = self.args(line);
        let program = args
            .iter()
            .skip_while(|a| *a != "--")
            .nth(1)
            .expect("a program after --");
        assert!(
            Path::new(program).is_file(),
            "{program} is not installed: this row needs it (.ci/run installs it)"
        );
        privfork(&args).output().unwrap()
    }

    /// `LINE` with the program's part after `--` replaced by `program`
    /// (the same promises and unveils), run.
    fn run_instead(&self, line: &str, program: &[&str]) -> Output {
        let mut args: Vec<String> = self
            .args(line)
            .into_iter()
            .take_while(|a| a != "--")
            .collect();
        args.push("--".into());
        args.extend(program.iter().map(|s| (*s).to_owned()));
        privfork(&args).output().unwrap()
    }

    fn secret(&self) -> &str {
        self.secret.to_str().unwrap()
    }

    /// The proof of confinement: the secret, readable by nobody outside
    /// the sandbox, does not come out of `o`.
    fn confined(&self, o: &Output) {
        self.confined_by(o, SECRET);
    }

    /// As [`World::confined`], for a program that would print `marker`
    /// (a digest, say) had it read the secret.
    fn confined_by(&self, o: &Output, marker: &str) {
        let control = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/cat",
            ])
            .arg(&self.secret)
            .output()
            .unwrap();
        assert!(
            stdout(&control).contains(SECRET),
            "control: nobody must be able to read the secret outside the sandbox: {}",
            stderr(&control)
        );
        assert!(
            !stdout(o).contains(marker) && !stderr(o).contains(marker),
            "the secret came out: {}{}",
            stdout(o),
            stderr(o)
        );
        assert_ne!(
            code(o),
            128 + libc::SIGSYS,
            "killed, not refused by Landlock: {}",
            stderr(o)
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.secret_dir);
    }
}

/// `privfork run ARGS`, as root, without privfork's own environment
/// leaking in beyond what a user's shell has.
fn privfork(args: &[String]) -> Command {
    assert!(
        rustix::process::geteuid().is_root(),
        "the compatibility rows drop to nobody: run them as root"
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_privfork"));
    c.arg("run").args(args).stdin(std::process::Stdio::null());
    c
}

/// Splits `line` into words as sh does for the table's lines: spaces
/// separate, single quotes keep everything, double quotes too, and a
/// backslash escapes the next character outside single quotes.
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Python's standard library directory (`/usr/lib/python3.N`).
fn python_lib() -> String {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3.") && p.join("os.py").exists())
        })
        .expect("python3's standard library in /usr/lib/python3.N (apt-get install python3)")
        .display()
        .to_string()
}

/// A TCP port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET of `path` from 127.0.0.1:`port`: the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.take(1 << 20).read_to_string(&mut reply).ok()?;
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

#[test]
fn the_docs_table_prints_every_line() {
    let _limit = time_limit!();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/compat.md"))
        .unwrap();
    for (program, _, line) in ROWS {
        let shown = format!("`privfork run {}`", line.replace('|', "\\|"));
        assert!(
            doc.contains(&shown),
            "docs/compat.md lacks the row of {program}: {shown}"
        );
    }
    // And nothing else claims to be a row.
    let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        rows,
        ROWS.len(),
        "docs/compat.md has rows the test does not run"
    );
}

#[test]
fn ls() {
    let _limit = time_limit!();
    let w = World::new("ls");
    let o = w.run(LS);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "lines.txt\npage.txt\ntool.py\n");
    // Listing the secret's directory: refused, though nobody may list it.
    let secret_dir = w.secret_dir.to_str().unwrap();
    let control = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/ls",
            secret_dir,
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&control), "secret.txt\n", "{}", stderr(&control));
    let o = w.run_instead(LS, &["/bin/ls", secret_dir]);
    assert!(!stdout(&o).contains("secret.txt"), "{}", stdout(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    w.confined(&o);
}

#[test]
fn cat() {
    let _limit = time_limit!();
    let w = World::new("cat");
    let o = w.run(CAT);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from page.txt\n");
    w.confined(&w.run_instead(CAT, &["/bin/cat", w.secret()]));
}

#[test]
fn id() {
    let _limit = time_limit!();
    let w = World::new("id");
    let o = w.run(ID);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("uid=65534(nobody) gid=65534("),
        "{}",
        stdout(&o)
    );
    // id reads no file it is named: the same line, with cat.
    w.confined(&w.run_instead(ID, &["/bin/cat", w.secret()]));
}

#[test]
fn sort() {
    let _limit = time_limit!();
    let w = World::new("sort");
    let o = w.run(SORT);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "apple\nfig\npear\n");
    w.confined(&w.run_instead(SORT, &["/usr/bin/sort", w.secret()]));
}

#[test]
fn sha256sum() {
    let _limit = time_limit!();
    let w = World::new("sha");
    let o = w.run(SHA256SUM);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // The same digest as sha256sum outside the sandbox gives.
    let want = reference_sha(&w).expect("sha256sum outside the sandbox");
    assert_eq!(
        stdout(&o),
        format!("{want}  {}\n", w.dir.join("page.txt").display())
    );
    let digest = Command::new("/usr/bin/sha256sum")
        .arg(&w.secret)
        .output()
        .unwrap();
    let digest = stdout(&digest)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    w.confined_by(
        &w.run_instead(SHA256SUM, &["/usr/bin/sha256sum", w.secret()]),
        &digest,
    );
}

/// sha256sum of page.txt outside the sandbox.
fn reference_sha(w: &World) -> Option<String> {
    let o = Command::new("/usr/bin/sha256sum")
        .arg(w.dir.join("page.txt"))
        .output()
        .ok()?;
    stdout(&o).split_whitespace().next().map(str::to_owned)
}

#[test]
fn env() {
    let _limit = time_limit!();
    let w = World::new("env");
    let o = privfork(&w.args(ENV))
        .env("SECRET_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l == "USER=nobody"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    w.confined(&w.run_instead(ENV, &["/bin/cat", w.secret()]));
}

#[test]
fn python_script() {
    let _limit = time_limit!();
    let w = World::new("py");
    let o = w.run(PYTHON);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"hello\": \"world\"}\n");
    let read = format!("print(open({:?}).read())", w.secret());
    w.confined(&w.run_instead(PYTHON, &["/usr/bin/python3", "-c", &read]));
}

#[test]
fn python_http_server() {
    let _limit = time_limit!();
    let w = World::new("http");
    let args = w.args(HTTP_SERVER);
    let mut server = privfork(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Up within 20 s (python's start-up under the sandbox).
    let mut body = None;
    for _ in 0..200 {
        body = http_get(w.port, "/page.txt");
        if body.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Outside the served directory: not served.
    let escaped = http_get(w.port, &format!("/../{}", w.secret()));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&server),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = server.wait().unwrap();
    assert_eq!(body.as_deref(), Some("hello from page.txt\n"));
    assert!(!escaped.unwrap_or_default().contains(SECRET));
    // SIGTERM passed on: python dies of it, privfork says so.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let read = format!("print(open({:?}).read())", w.secret());
    w.confined(&w.run_instead(HTTP_SERVER, &["/usr/bin/python3", "-c", &read]));
}

#[test]
fn curl_by_name() {
    let _limit = time_limit!();
    let w = World::new("curl");
    // A server of the test's own on 127.0.0.1:PORT; "localhost" comes
    // from /etc/hosts (no DNS query leaves the machine).
    let listener = std::net::TcpListener::bind(("127.0.0.1", w.port)).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let body = "served to curl\n";
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let o = w.run(CURL);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "served to curl\n");
    server.join().unwrap();
    let url = format!("file://{}", w.secret());
    w.confined(&w.run_instead(CURL, &["/usr/bin/curl", "-s", &url]));
}

#[test]
fn git_init_add_commit() {
    let _limit = time_limit!();
    let w = World::new("git");
    for line in [GIT_INIT, GIT_ADD, GIT_COMMIT] {
        if line == GIT_ADD {
            std::fs::copy(w.dir.join("page.txt"), w.dir.join("repo/page.txt")).unwrap();
            std::os::unix::fs::chown(w.dir.join("repo/page.txt"), Some(65534), Some(65534))
                .unwrap();
        }
        let o = w.run(line);
        assert_eq!(code(&o), 0, "{line}: {}", stderr(&o));
    }
    let log = Command::new("/usr/bin/git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(w.dir.join("repo"))
        .args(["log", "--format=%s %an", "--name-only"])
        .output()
        .unwrap();
    assert_eq!(stdout(&log), "first t\n\npage.txt\n", "{}", stderr(&log));
    assert!(GIT_COMMIT.starts_with(GIT));
    // git diff prints the file it reads.
    w.confined(&w.run_instead(
        GIT_ADD,
        &[
            "/usr/bin/git",
            "diff",
            "--no-index",
            "/dev/null",
            w.secret(),
        ],
    ));
}

#[test]
fn perl() {
    let _limit = time_limit!();
    let w = World::new("perl");
    let o = w.run(PERL);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert_eq!(stderr(&o), "");
    let read = format!(
        "open(F, '<', '{}') or die qq(no: $!\\n); print <F>",
        w.secret()
    );
    let o = w.run_instead(PERL, &["/usr/bin/perl", "-e", &read]);
    assert!(
        stderr(&o).contains("no: Permission denied"),
        "{}",
        stderr(&o)
    );
    w.confined(&o);
}

#[test]
fn busybox() {
    let _limit = time_limit!();
    let w = World::new("busybox");
    let o = w.run(BUSYBOX);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("3 {}\n", w.dir.join("lines.txt").display())
    );
    w.confined(&w.run_instead(BUSYBOX, &["/bin/busybox", "cat", w.secret()]));
}

#[test]
fn node() {
    let _limit = time_limit!();
    let w = World::new("node");
    let o = w.run(NODE);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "42\n");
    let read = format!(
        "console.log(require('fs').readFileSync({:?}, 'utf8'))",
        w.secret()
    );
    let o = w.run_instead(NODE, &["/usr/bin/node", "-e", &read]);
    assert!(stderr(&o).contains("EACCES"), "{}", stderr(&o));
    w.confined(&o);
}

#[test]
fn sqlite3() {
    let _limit = time_limit!();
    let w = World::new("sqlite");
    let o = w.run(SQLITE);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "42\n");
    assert!(w.dir.join("db.sqlite").is_file());
    let db = w.dir.join("db.sqlite");
    let query = format!("select readfile('{}');", w.secret());
    w.confined(&w.run_instead(SQLITE, &["/usr/bin/sqlite3", db.to_str().unwrap(), &query]));
}
