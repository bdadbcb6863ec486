//! The HTML pages: no script, one stylesheet, every piece of text from a
//! note or the system escaped, the rendered note body sanitized by the
//! render child (`render.rs`).

use axum::http::StatusCode;
use privfork::family::FamilyStatus;

use crate::store::{Note, NoteMeta};
use crate::web::time_text;

/// Escapes text for HTML element content and double- or single-quoted
/// attributes. (`ammonia::clean_text` is safe too but also encodes every
/// space and most punctuation, which makes the pages unreadable as
/// source; these five characters are all that text content and quoted
/// attributes need.)
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet (served as `/style.css`: the CSP allows no inline
/// style).
pub const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d1f21; --muted: #666; --line: #ddd; --accent: #2a6; --bg: #fff; --card: #f7f7f5; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --muted: #999; --line: #333; --bg: #151515; --card: #1e1e1e; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 46rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }
header { display: flex; align-items: baseline; gap: .75rem; border-bottom: 1px solid var(--line); margin-bottom: 1.25rem; }
header h1 { font-size: 1.4rem; margin: .5rem 0; }
header h1 a { color: inherit; text-decoration: none; }
header p { color: var(--muted); margin: 0; font-size: .9rem; }
textarea { width: 100%; min-height: 9rem; font: 15px/1.4 ui-monospace, monospace; padding: .6rem; border: 1px solid var(--line); border-radius: 6px; background: var(--card); color: inherit; }
button { margin-top: .5rem; padding: .45rem 1.1rem; border: 0; border-radius: 6px; background: var(--accent); color: #fff; font-weight: 600; cursor: pointer; }
button.danger { background: #b33; }
ul.notes { list-style: none; padding: 0; }
ul.notes li { display: flex; justify-content: space-between; gap: 1rem; padding: .5rem 0; border-bottom: 1px solid var(--line); }
ul.notes time, .meta { color: var(--muted); font-size: .85rem; white-space: nowrap; }
article { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .25rem 1.25rem; overflow-wrap: anywhere; }
article pre { overflow-x: auto; }
.error { border-left: 4px solid #b33; padding: .5rem 1rem; background: var(--card); }
nav.pages { display: flex; justify-content: space-between; }
footer { margin-top: 2.5rem; font-size: .8rem; color: var(--muted); }
footer table { border-collapse: collapse; width: 100%; }
footer th, footer td { text-align: left; padding: .2rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
"#;

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<main>
<header><h1><a href="/">notes</a></h1><p>a privilege-separated notes service, built on privfork</p></header>
{body}
</main>
</body>
</html>
"#,
        title = esc(title)
    )
}

/// The front page: the form, the recent notes, the family's status.
pub fn index(
    notes: &[NoteMeta],
    total: usize,
    offset: usize,
    limit: usize,
    status: Option<&Result<FamilyStatus, String>>,
) -> String {
    let mut b = String::new();
    b.push_str(
        r#"<form method="post" action="/notes">
<label for="text">Write a note (markdown)</label>
<textarea id="text" name="text" required placeholder="Markdown works: **bold**, _italic_, [links](https://example.org), lists, code."></textarea>
<button type="submit">Save note</button>
</form>
"#,
    );
    b.push_str(&format!(
        "<h2>Notes <span class=\"meta\">({total})</span></h2>\n"
    ));
    if notes.is_empty() {
        b.push_str("<p class=\"meta\">No notes yet.</p>\n");
    } else {
        b.push_str("<ul class=\"notes\">\n");
        for n in notes {
            // A markdown heading's hashes are not part of the title.
            let title = n.title.trim_start_matches('#').trim();
            let title = if title.is_empty() {
                "(untitled)"
            } else {
                title
            };
            b.push_str(&format!(
                "<li><a href=\"/notes/{id}\">{title}</a><time>{time}</time></li>\n",
                id = n.id,
                title = esc(title),
                time = esc(&time_text(n.created)),
            ));
        }
        b.push_str("</ul>\n");
    }
    if offset > 0 || offset + notes.len() < total {
        b.push_str("<nav class=\"pages\">");
        if offset > 0 {
            b.push_str(&format!(
                "<a href=\"/?offset={}&amp;limit={limit}\">newer</a>",
                offset.saturating_sub(limit)
            ));
        } else {
            b.push_str("<span></span>");
        }
        if offset + notes.len() < total {
            b.push_str(&format!(
                "<a href=\"/?offset={}&amp;limit={limit}\">older</a>",
                offset + notes.len()
            ));
        }
        b.push_str("</nav>\n");
    }
    if let Some(status) = status {
        b.push_str(&status_footer(status));
    }
    layout("notes", &b)
}

/// The footer table: who runs as whom under what.
fn status_footer(status: &Result<FamilyStatus, String>) -> String {
    let s = match status {
        Ok(s) => s,
        Err(e) => {
            return format!(
                "<footer><p>Family status unavailable: {}</p></footer>\n",
                esc(e)
            );
        }
    };
    let mut f = format!(
        "<footer><table id=\"family\"><caption>The process family, generation {} serving</caption>\n\
         <tr><th>role</th><th>generation</th><th>state</th><th>pid</th><th>user</th><th>promises</th><th>seccomp</th><th>landlock</th><th>restarts</th></tr>\n",
        s.generation
    );
    let user = |p: &privfork::family::ProcessFacts| {
        p.user.clone().unwrap_or_else(|| p.uids[1].to_string())
    };
    f.push_str(&format!(
        "<tr><td>main</td><td>-</td><td>running</td><td>{}</td><td>{}</td><td>(none: binds, supervises)</td><td>{}</td><td>-</td><td>-</td></tr>\n",
        s.main.pid,
        esc(&user(&s.main)),
        seccomp_text(&s.main),
    ));
    for m in &s.members {
        let (pid, u, sc) = match &m.process {
            Some(p) => (p.pid.to_string(), user(p), seccomp_text(p)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let reported = m.reported.as_ref();
        let promises = reported
            .and_then(|r| r.promises.clone())
            .or_else(|| reported.and_then(|r| r.detail.clone()))
            .unwrap_or_else(|| "-".into());
        let landlock = reported
            .and_then(|r| r.layers.iter().find(|(n, _)| n == "landlock"))
            .map_or("-".to_owned(), |(_, l)| l.clone());
        f.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{pid}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&m.role),
            m.generation,
            esc(&m.state),
            esc(&u),
            esc(&promises),
            esc(&sc),
            esc(&landlock),
            m.restarts
        ));
    }
    f.push_str("</table>\n");
    f.push_str(&restarts_text(s));
    f.push_str("</footer>\n");
    f
}

/// The smooth restarts: how many, whether one is under way, how the last
/// one ended.
fn restarts_text(s: &FamilyStatus) -> String {
    let mut t = format!(
        "<p id=\"restarts\">Smooth restarts (SIGHUP): {}{}",
        s.restarts,
        if s.restarting { ", one under way" } else { "" }
    );
    if let Some(r) = &s.last_restart {
        // A success's detail names the generation serving; a failure's is
        // only why.
        let outcome = if r.ok {
            "succeeded".to_owned()
        } else {
            format!("failed (generation {} kept serving)", r.generation)
        };
        t.push_str(&format!(
            "; the last (number {}) {outcome} at {} after {} ms: {}",
            r.number,
            esc(&time_text(r.finished_unix_ms)),
            r.duration_ms,
            esc(&r.detail)
        ));
    }
    t.push_str("</p>\n");
    t
}

fn seccomp_text(p: &privfork::family::ProcessFacts) -> String {
    match p.seccomp {
        2 => format!("filter ({})", p.seccomp_filters),
        1 => "strict".into(),
        _ => "none".into(),
    }
}

fn note_header(note: &Note) -> String {
    format!(
        "<p class=\"meta\">Note <code>{id}</code>, written <time>{t}</time></p>\n",
        id = note.id,
        t = esc(&time_text(note.created))
    )
}

fn delete_form(note: &Note) -> String {
    format!(
        "<form method=\"post\" action=\"/notes/{}/delete\"><button class=\"danger\" type=\"submit\">Delete</button></form>\n",
        note.id
    )
}

/// A note, rendered (`html` is the render child's sanitized output).
pub fn note(note: &Note, html: &str) -> String {
    let title = note
        .text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("note")
        .trim_start_matches('#')
        .trim();
    let title: String = title.chars().take(80).collect();
    layout(
        &title,
        &format!(
            "{}<article>\n{html}\n</article>\n{}",
            note_header(note),
            delete_form(note)
        ),
    )
}

/// A note that could not be rendered: the reason, and its text as text.
pub fn note_failed(note: &Note, why: &str) -> String {
    let shown: String = note.text.chars().take(4096).collect();
    layout(
        "note not rendered",
        &format!(
            "{}<p class=\"error\" id=\"render-error\">{}</p>\n<details><summary>The note's text{}</summary><pre>{}</pre></details>\n{}",
            note_header(note),
            esc(why),
            if shown.len() < note.text.len() {
                " (start)"
            } else {
                ""
            },
            esc(&shown),
            delete_form(note)
        ),
    )
}

/// An error page.
pub fn error(status: StatusCode, message: &str) -> String {
    layout(
        &format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        &format!(
            "<p class=\"error\">{} — {}</p>\n<p><a href=\"/\">Back to the notes</a></p>\n",
            status.as_u16(),
            esc(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use privfork::family::{MemberStatus, ProcessFacts, RestartReport};

    fn status() -> FamilyStatus {
        FamilyStatus {
            generation: 3,
            started_unix_ms: 0,
            main: ProcessFacts::default(),
            members: vec![MemberStatus {
                role: "worker".into(),
                instance: 0,
                state: "stopping".into(),
                generation: 2,
                restarts: 0,
                uptime_ms: 0,
                process: None,
                reported: None,
            }],
            restarts: 2,
            restarting: false,
            last_restart: None,
        }
    }

    #[test]
    fn the_footer_shows_generations_and_the_last_restart() {
        let mut s = status();
        let f = status_footer(&Ok(s.clone()));
        assert!(f.contains("generation 3 serving"), "{f}");
        assert!(
            f.contains("<td>worker</td><td>2</td><td>stopping</td>"),
            "{f}"
        );
        assert!(f.contains("Smooth restarts (SIGHUP): 2</p>"), "{f}");
        s.restarting = true;
        s.last_restart = Some(RestartReport {
            number: 2,
            ok: false,
            generation: 3,
            detail: "preflight: <bad>".into(),
            duration_ms: 12,
            finished_unix_ms: 0,
        });
        let f = status_footer(&Ok(s));
        assert!(
            f.contains(
                "2, one under way; the last (number 2) failed (generation 3 kept serving) at 1970-01-01T00:00:00Z after 12 ms"
            ),
            "{f}"
        );
        assert!(f.contains("preflight: &lt;bad&gt;"), "{f}");
    }
}
