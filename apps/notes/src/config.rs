//! The command line: one `Config`, parsed by main and again by each
//! member (main passes its arguments on, so every process reads the same
//! settings).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A notes service in three processes: a root main that owns the
/// listening sockets, a sandboxed worker that serves HTTP and stores the
/// notes, and a render helper that turns each note's markdown into HTML
/// in a throwaway child under `stdio` alone.
#[derive(Debug, Clone, Parser)]
#[command(name = "notes", version)]
pub struct Config {
    /// Where to listen: `HOST:PORT`, `[V6]:PORT` or `unix:/PATH` (with
    /// `,mode=0660,owner=USER,group=GROUP`); repeatable.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: Vec<String>,

    /// A host name the service is reached by, beyond IP addresses and
    /// `localhost` (e.g. `notes.example.org` behind a proxy); repeatable.
    /// A request naming any other host is refused (421), so a page
    /// elsewhere cannot reach the app through DNS rebinding.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// The data directory: one file per note. Created (mode 0700, owned by
    /// the worker's user) if missing.
    #[arg(long, value_name = "DIR", default_value = "notes-data")]
    pub data: PathBuf,

    /// The user the worker runs as (and owns the data directory).
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub user: String,

    /// The user each render child runs as.
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub render_user: String,

    /// How long one render may take before its child is killed.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub render_timeout_ms: u64,

    /// Largest rendered page a render child may send back, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..=(64 << 20)))]
    pub render_max: u64,

    /// Address space each render child may use, in MiB (RLIMIT_AS; the
    /// helper's own mappings count too). A note that makes the renderer
    /// allocate past it ends that child alone.
    #[arg(long, value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(64..=65_536))]
    pub render_max_memory: u64,

    /// Largest request body, in bytes (a note's JSON or form).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=(16 << 20)))]
    pub max_body: u64,

    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,

    /// Seconds a client has to send a request's head, and its body.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,

    /// Do not serve `/api/status` (the family's pids, users and sandbox).
    #[arg(long)]
    pub no_status: bool,

    /// Run the worker without its sandbox. For measuring the sandbox's
    /// cost only: never in production.
    #[arg(long)]
    pub no_sandbox: bool,

    /// Check the configuration and run a self-test, then exit 0 (good) or
    /// 1; binds nothing, creates and deletes nothing.
    #[arg(long)]
    pub check: bool,
}

impl Config {
    /// The render deadline.
    pub fn render_timeout(&self) -> Duration {
        Duration::from_millis(self.render_timeout_ms)
    }

    /// The head and body read timeout.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout)
    }

    /// Parses the arguments main passed to a member (the program's own,
    /// as main resolved them).
    pub fn from_member_args(args: &[String]) -> Result<Self, clap::Error> {
        Self::try_parse_from(std::iter::once("notes".to_owned()).chain(args.iter().cloned()))
    }

    /// The arguments main passes on to members: every setting, explicit,
    /// with the data directory made absolute (members start in `/`).
    pub fn member_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for l in &self.listen {
            a.push(format!("--listen={l}"));
        }
        for h in &self.hosts {
            a.push(format!("--host={h}"));
        }
        // `prepare` refuses a path that is not UTF-8, so this is exact.
        a.push(format!("--data={}", self.data.display()));
        a.push(format!("--user={}", self.user));
        a.push(format!("--render-user={}", self.render_user));
        a.push(format!("--render-timeout-ms={}", self.render_timeout_ms));
        a.push(format!("--render-max={}", self.render_max));
        a.push(format!("--render-max-memory={}", self.render_max_memory));
        a.push(format!("--max-body={}", self.max_body));
        a.push(format!("--max-connections={}", self.max_connections));
        a.push(format!("--read-timeout={}", self.read_timeout));
        if self.no_status {
            a.push("--no-status".into());
        }
        if self.no_sandbox {
            a.push("--no-sandbox".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_args_round_trip() {
        let c = Config::try_parse_from([
            "notes",
            "--listen",
            "127.0.0.1:1",
            "--listen=unix:/run/x.sock,mode=0600",
            "--data",
            "/srv/notes dir",
            "--user",
            "4000",
            "--no-status",
        ])
        .unwrap();
        let back = Config::from_member_args(&c.member_args()).unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.data, c.data);
        assert_eq!(back.user, "4000");
        assert!(back.no_status && !back.no_sandbox);
        assert_eq!(back.render_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            ["notes", "--render-timeout-ms", "0"],
            ["notes", "--max-body", "12"],
            ["notes", "--max-connections", "0"],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
