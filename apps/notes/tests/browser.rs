//! The notes pages in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver), writes a note with the form, reads it
//! rendered, finds it in the list and follows the link, and cannot be made
//! to run a note's script. The pages carry no JavaScript (the CSP forbids
//! it), so all of this is plain forms and links. Runs as root (the app
//! drops its worker to nobody); fails, never skips, when the browser is
//! missing (Debian packages `chromium` and `chromium-driver`; `.ci/run`
//! installs them).

mod common;
#[path = "../../../crates/privfork/tests/time_limit/mod.rs"]
mod time_limit;

use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Notes, TempDir, free_port, require_root};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use time_limit::time_limit;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Each test's time limit, in seconds.
const LIMIT_SECS: u64 = 120;
/// The longest wait for one thing: chromedriver listening, a page, a URL.
const WAIT: Duration = Duration::from_secs(20);
/// The longest wait for chromedriver to start Chromium (it gives up
/// after 60 s itself).
const BROWSER_START: Duration = Duration::from_secs(60);
/// Most bytes of chromedriver's output quoted in a failure.
const LOG_QUOTE: u64 = 64 << 10;

/// A chromedriver on a free loopback port, its output in a file, leading
/// a process group that holds it and the Chromium it starts. Dropping it
/// kills the whole group.
#[derive(Debug)]
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    log: PathBuf,
    /// Holds the log and Chromium's profile; removed after the kill.
    dir: TempDir,
}

impl Driver {
    /// Starts chromedriver and waits until it listens.
    fn start() -> Self {
        require_package(CHROMIUM, "chromium");
        require_package(CHROMEDRIVER, "chromium-driver");
        let dir = TempDir::new("chromium");
        let log = dir.path().join("chromedriver.log");
        let out = File::create(&log).expect("create chromedriver's log");
        let port = free_port();
        // `timeout` bounds the group's life even when the time limit aborts
        // this process and no drop runs: it signals its whole process group
        // (chromedriver, Chromium and Chromium's helpers).
        let child = Command::new("timeout")
            .arg("--kill-after=5")
            .arg(format!("{}s", LIMIT_SECS + 30))
            .arg(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup chromedriver's log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER} under timeout: {e}"));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            dir,
        };
        let end = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver (Debian package chromium-driver) did not start: {status}; \
                     its output:\n{}",
                    driver.log()
                );
            }
            assert!(
                Instant::now() < end,
                "chromedriver (Debian package chromium-driver) did not listen on port {port} \
                 within {WAIT:?}; its output:\n{}",
                driver.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        driver
    }

    /// The start of chromedriver's output (it includes Chromium's).
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(f) = File::open(&self.log) {
            let _ = f.take(LOG_QUOTE).read_to_string(&mut text);
        }
        text
    }

    /// A WebDriver session with a fresh headless Chromium.
    async fn browser(&self) -> Client {
        let profile = self.dir.path().join("profile");
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    // Root cannot use Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    // Without these Chromium reaches for the (closed) network.
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "timeouts": { "pageLoad": WAIT.as_millis() as u64 },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        match tokio::time::timeout(BROWSER_START, builder.connect(&self.url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "Chromium ({CHROMIUM}, Debian package chromium) did not start under \
                 chromedriver: {e}\nchromedriver's output:\n{}",
                self.log()
            ),
            Err(_) => panic!(
                "Chromium ({CHROMIUM}, Debian package chromium) did not start under \
                 chromedriver within {BROWSER_START:?}\nchromedriver's output:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The child leads its process group (process_group(0)), so its pid
        // names the group.
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// Fails loudly unless `path` exists: the test needs Debian's `package`.
fn require_package(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the browser test needs the Debian package `{package}` \
         (apt-get install -y chromium chromium-driver; .ci/run does this)"
    );
}

/// Types `text` into the front page's form and submits it with the button;
/// waits for the note's page; its id.
async fn write_note(c: &Client, text: &str) -> String {
    let area = c
        .find(Locator::Css("form[action='/notes'] textarea#text"))
        .await
        .expect("the front page's textarea");
    area.send_keys(text).await.expect("typing the note");
    c.find(Locator::Css("form[action='/notes'] button[type='submit']"))
        .await
        .expect("the form's submit button")
        .click()
        .await
        .expect("clicking the submit button");
    note_page(c).await
}

/// Waits until the browser is at `/notes/<32 hex digits>`; the id.
async fn note_page(c: &Client) -> String {
    let end = Instant::now() + WAIT;
    loop {
        let url = c.current_url().await.expect("the current URL");
        if let Some(id) = url.path().strip_prefix("/notes/")
            && id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return id.to_owned();
        }
        if Instant::now() >= end {
            let page = c.source().await.unwrap_or_default();
            panic!(
                "the browser did not reach /notes/<id> within {WAIT:?}; it is at {url}:\n{page}"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The text of the only element `css` matches.
async fn text_of(c: &Client, css: &str) -> String {
    let all = c.find_all(Locator::Css(css)).await.expect(css);
    assert_eq!(all.len(), 1, "{css} matches {} elements", all.len());
    all[0].text().await.expect(css)
}

/// Checks the page shows the browser note rendered from its markdown.
async fn assert_browser_note(c: &Client) {
    assert_eq!(text_of(c, "article h1").await, "Browser note");
    assert_eq!(text_of(c, "article strong").await, "world");
    let body = text_of(c, "article").await;
    assert!(body.contains("Hello world from Chromium"), "{body}");
}

/// Saves a screenshot of the current page as `target/NAME`; its path.
async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "not a PNG of a page ({} bytes)",
        png.len()
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&dir).expect("create target/");
    let path = dir.join(name);
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    path
}

/// A chromedriver, the app, and a browser session on a 1024×768 window.
async fn session() -> (Driver, Notes, Client) {
    let driver = Driver::start();
    let n = Notes::start(&[]);
    let c = driver.browser().await;
    c.set_window_size(1024, 768).await.expect("window size");
    (driver, n, c)
}

#[tokio::test]
async fn a_note_written_in_the_browser_renders_and_is_listed() {
    let _limit = time_limit!(LIMIT_SECS);
    require_root();
    let (_driver, n, c) = session().await;
    let front = format!("{}/", n.base);

    c.goto(&front).await.expect("loading the front page");
    assert_eq!(c.title().await.expect("the title"), "notes");

    let typed = "# Browser note\n\nHello **world** from Chromium";
    let id = write_note(&c, typed).await;
    assert_browser_note(&c).await;
    // The browser sent what was typed.
    let (s, b) = n.call("GET", &format!("/api/notes/{id}"), None);
    assert_eq!(s, 200, "{b}");
    let stored = common::json(&b)["text"].as_str().unwrap().to_owned();
    // Browsers send a textarea's line breaks as CRLF; the form handler
    // stores them as LF.
    assert_eq!(stored, typed, "stored {stored:?}");
    let shot = screenshot(&c, "notes-browser.png").await;
    eprintln!("screenshot of the note page: {}", shot.display());

    c.goto(&front).await.expect("back to the front page");
    let link = c
        .find(Locator::Css(&format!("ul.notes a[href='/notes/{id}']")))
        .await
        .expect("the note's link in the front page's list");
    let title = link.text().await.expect("the link's text");
    assert!(title.contains("Browser note"), "{title}");
    link.click().await.expect("following the link");
    assert_eq!(note_page(&c).await, id);
    assert_browser_note(&c).await;

    c.close().await.expect("ending the session");
}

#[tokio::test]
async fn a_notes_markup_runs_no_script_in_the_browser() {
    let _limit = time_limit!(LIMIT_SECS);
    require_root();
    let (_driver, n, c) = session().await;

    c.goto(&format!("{}/", n.base))
        .await
        .expect("loading the front page");
    let id = write_note(
        &c,
        "Words before the markup.\n\n\
         <script>document.title='pwned'</script>\
         <img src=x onerror=\"document.title='pwned'\">\n\n\
         Words after the markup.",
    )
    .await;
    assert_eq!(id.len(), 32);

    let scripts = c.find_all(Locator::Css("script")).await.expect("scripts");
    assert!(
        scripts.is_empty(),
        "{} script element(s) in the DOM",
        scripts.len()
    );
    let handlers = c
        .find_all(Locator::Css("[onerror]"))
        .await
        .expect("handlers");
    assert!(
        handlers.is_empty(),
        "{} onerror handler(s) in the DOM",
        handlers.len()
    );
    // Let any image finish (load or fail) before reading the title, so a
    // handler that was going to run has run.
    for img in c.find_all(Locator::Css("img")).await.expect("images") {
        let end = Instant::now() + WAIT;
        while img.prop("complete").await.expect("img.complete").as_deref() != Some("true") {
            assert!(
                Instant::now() < end,
                "an image did not settle within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let title = c.title().await.expect("the title");
    assert_ne!(title, "pwned");

    let body = text_of(&c, "article").await;
    assert!(body.contains("Words before the markup."), "{body}");
    assert!(body.contains("Words after the markup."), "{body}");
    let shown = if body.contains("document.title") {
        "shown escaped, as text"
    } else {
        "removed"
    };
    eprintln!("the note's raw tags were {shown}; the article reads {body:?}; title {title:?}");
    screenshot(&c, "notes-browser-markup.png").await;

    c.close().await.expect("ending the session");
}
