//! Markdown to sanitized HTML, for the render helper.
//!
//! Two layers, so that neither alone has to be right:
//!
//! 1. pulldown-cmark parses CommonMark with tables, strikethrough and task
//!    lists. Raw HTML in a note is not passed through: it is turned into
//!    text (inline) or a code block (a block of HTML), so a note shows the
//!    markup its author typed and never becomes markup itself.
//! 2. ammonia cleans pulldown-cmark's output against an allowlist of the
//!    tags and attributes markdown produces: links only to `http`,
//!    `https`, `mailto` or relative URLs, each link with
//!    `rel="noopener noreferrer nofollow"`; images only from absolute
//!    `http`/`https` URLs (a relative image would be fetched from this
//!    service with the reader's cookies); no `style`, `class` or `id`, so
//!    table column alignment and code block languages are dropped.
//!
//! This runs in a forked child whose seccomp filter allows only `stdio`:
//! neither crate opens files, starts threads or reads the clock. Two things
//! do reach the kernel beyond read/write and memory: ammonia's `Builder`
//! holds std `HashSet`s, whose `RandomState` seeds itself once per thread
//! with `getrandom(2)` (allowed under `stdio`; a child forked from a thread
//! that already seeded has the seed and makes no call), and html5ever's
//! atom table behind a lock (`futex`, also `stdio`).

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use ammonia::{Builder, Url, UrlRelative};
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd, html};

/// The deepest nesting of elements rendered as such; the content of
/// deeper elements is kept, as the content of the element at this depth.
///
/// html5ever (inside ammonia) spends time proportional to the depth of open
/// elements on each new element, so nesting costs quadratic time: 10 000
/// nested `>` (10 KB of note) took 0.4 s in a release build, 100 000 about
/// a minute. Real notes nest a handful of levels.
pub const MAX_NESTING: usize = 32;

/// The `rel` every link gets: no `window.opener` for the target, no
/// `Referer` naming the note, no search-engine credit for spam links.
pub const LINK_REL: &str = "noopener noreferrer nofollow";

/// Renders `markdown` to HTML that is safe to embed in a page: no script,
/// no event handler, no `javascript:`, `vbscript:` or `data:` URL, no
/// style; see the module docs for what survives.
///
/// Nesting is capped at [`MAX_NESTING`], the one input found that made
/// time grow faster than the input. Otherwise, in a release build, the
/// slowest 1 MiB notes tried (`*_` nested emphasis, a page of task items,
/// 150 000 links) took 0.8–1.1 s, and the output can be 8 times the input
/// (a link `[a](b) ` becomes 60 bytes). The caller bounds the input (notes
/// are at most 1 MiB) and the render helper's deadline bounds the rest.
pub fn render(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = CapNesting::new(Parser::new_ext(markdown, options).map(raw_html_as_text));
    let mut unsafe_html = String::with_capacity(markdown.len() + markdown.len() / 2);
    html::push_html(&mut unsafe_html, events);
    sanitizer().clean(&unsafe_html).to_string()
}

/// Turns raw HTML events into text, so the HTML writer escapes them: a
/// block of HTML becomes a code block showing it, inline HTML plain text.
fn raw_html_as_text(event: Event<'_>) -> Event<'_> {
    match event {
        Event::Start(Tag::HtmlBlock) => Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)),
        Event::End(TagEnd::HtmlBlock) => Event::End(TagEnd::CodeBlock),
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        other => other,
    }
}

/// Passes on events, leaving out the start and end of elements nested
/// deeper than [`MAX_NESTING`] (their content stays).
struct CapNesting<I> {
    events: I,
    /// How many elements are open, passed on or not.
    depth: usize,
}

impl<I> CapNesting<I> {
    fn new(events: I) -> Self {
        CapNesting { events, depth: 0 }
    }
}

impl<'a, I: Iterator<Item = Event<'a>>> Iterator for CapNesting<I> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            let event = self.events.next()?;
            match event {
                Event::Start(_) => {
                    self.depth += 1;
                    if self.depth <= MAX_NESTING {
                        return Some(event);
                    }
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth < MAX_NESTING {
                        return Some(event);
                    }
                }
                other => return Some(other),
            }
        }
    }
}

/// The ammonia configuration: exactly what pulldown-cmark emits for the
/// enabled extensions, nothing else.
fn sanitizer() -> Builder<'static> {
    #[rustfmt::skip]
    let tags = HashSet::from([
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "del", "a", "img", "code",
        "pre", "blockquote", "ul", "ol", "li", "input", "table", "thead", "tbody", "tr", "th",
        "td", "hr", "br",
    ]);
    let tag_attributes = HashMap::from([
        ("a", HashSet::from(["href", "title"])),
        ("img", HashSet::from(["src", "alt", "title"])),
        ("ol", HashSet::from(["start"])),
        // Task list markers: `<input disabled type="checkbox" checked>`.
        ("input", HashSet::from(["disabled", "checked"])),
    ]);
    let tag_attribute_values = HashMap::from([(
        "input",
        HashMap::from([("type", HashSet::from(["checkbox"]))]),
    )]);
    let mut builder = Builder::empty();
    builder
        .tags(tags)
        .tag_attributes(tag_attributes)
        .tag_attribute_values(tag_attribute_values)
        .generic_attributes(HashSet::new())
        // Dropped with their content; other tags lose only the tag.
        .clean_content_tags(HashSet::from(["script", "style"]))
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .url_relative(UrlRelative::PassThrough)
        .link_rel(Some(LINK_REL))
        .strip_comments(true)
        .attribute_filter(only_remote_images);
    builder
}

/// Keeps an `img` `src` only if it is an absolute `http` or `https` URL
/// (the allowed schemes also admit `mailto` and relative URLs, for links).
fn only_remote_images<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    if element == "img" && attribute == "src" {
        let remote = Url::parse(value).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
        if !remote {
            return None;
        }
    }
    Some(Cow::Borrowed(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tags in `html` with their attributes. ammonia serializes every
    /// `<` of text as `&lt;` and every value in double quotes with `"` as
    /// `&quot;`, so this small scanner reads its output exactly.
    fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            rest = &rest[start + 1..];
            if rest.starts_with('/') {
                rest = &rest[rest.find('>').expect("closed end tag")..];
                continue;
            }
            let name_end = rest.find([' ', '>']).expect("tag ends");
            let name = rest[..name_end].to_owned();
            rest = &rest[name_end..];
            let mut attrs = Vec::new();
            while let Some(after_space) = rest.strip_prefix(' ') {
                let attr_end = after_space.find(['=', ' ', '>']).expect("attribute ends");
                let attr = after_space[..attr_end].to_owned();
                rest = &after_space[attr_end..];
                let mut value = String::new();
                if let Some(quoted) = rest.strip_prefix("=\"") {
                    let close = quoted.find('"').expect("value ends");
                    value = quoted[..close].to_owned();
                    rest = &quoted[close + 1..];
                }
                attrs.push((attr, value));
            }
            assert!(rest.starts_with('>'), "tag {name} ends oddly in {html}");
            found.push((name, attrs));
        }
        found
    }

    /// Every tag and attribute is on the allowlist, and no URL has a scheme
    /// other than http, https or mailto: what every hostile test checks.
    fn assert_inert(html: &str) {
        for (tag, attrs) in tags(html) {
            let allowed: &[&str] = match tag.as_str() {
                "a" => &["href", "title", "rel"],
                "img" => &["src", "alt", "title"],
                "ol" => &["start"],
                "input" => &["type", "disabled", "checked"],
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "em" | "strong" | "del"
                | "code" | "pre" | "blockquote" | "ul" | "li" | "table" | "thead" | "tbody"
                | "tr" | "th" | "td" | "hr" | "br" => &[],
                _ => panic!("tag <{tag}> in {html}"),
            };
            for (attr, value) in attrs {
                assert!(allowed.contains(&attr.as_str()), "<{tag} {attr}> in {html}");
                match attr.as_str() {
                    "href" | "src" => assert!(
                        matches!(
                            url_scheme(&value).as_deref(),
                            None | Some("http" | "https" | "mailto")
                        ),
                        "<{tag} {attr}={value:?}> in {html}"
                    ),
                    "rel" => assert_eq!(value, LINK_REL),
                    "type" => assert_eq!(value, "checkbox"),
                    _ => {}
                }
            }
        }
    }

    /// The scheme a browser finds in a serialized attribute value: the
    /// value unescaped (ammonia escapes only `&`, `"` and U+00A0), leading
    /// and trailing C0 controls and spaces trimmed and tabs and newlines
    /// removed (WHATWG URL parsing), then `[a-z][a-z0-9+.-]*:`.
    fn url_scheme(value: &str) -> Option<String> {
        let value = value
            .replace("&quot;", "\"")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&");
        let value: String = value
            .trim_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect();
        let colon = value.find(':')?;
        let scheme = value[..colon].to_ascii_lowercase();
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        valid.then_some(scheme)
    }

    #[test]
    fn the_checker_sees_bad_markup() {
        let bad = [
            "<script>x</script>",
            "<p onclick=\"x\">y</p>",
            "<a href=\"javascript:x\" rel=\"noopener noreferrer nofollow\">y</a>",
            "<img src=\"data:x\">",
            "<a href=\"https://e.com\" rel=\"opener\">y</a>",
            "<a href=\" \tJava\nScript:x\" rel=\"noopener noreferrer nofollow\">y</a>",
            "<a href=\"x\" rel=\"noopener noreferrer nofollow\" onclick=\"y\">z</a>",
            "<input type=\"text\">",
        ];
        for html in bad {
            assert!(
                std::panic::catch_unwind(|| assert_inert(html)).is_err(),
                "{html}"
            );
        }
        assert_inert(
            "<p>a &lt;script&gt; <a href=\"/x:y\" rel=\"noopener noreferrer nofollow\">b</a></p>",
        );
        // Not a scheme (a `%`): a relative path, as browsers read it.
        assert_eq!(url_scheme("java%09script:x"), None);
        assert_eq!(url_scheme(" JavaScript:x").as_deref(), Some("javascript"));
    }

    #[test]
    fn headings_emphasis_lists_code() {
        let html = render(
            "# One\n\n## Two\n\n*em* **strong** ~~gone~~ `code`\n\n\
             - a\n- b\n\n3. c\n4. d\n\n```rust\nfn main() {}\n```\n\n> quoted\n\n---\n\nline  \nbreak",
        );
        for want in [
            "<h1>One</h1>",
            "<h2>Two</h2>",
            "<em>em</em>",
            "<strong>strong</strong>",
            "<del>gone</del>",
            "<code>code</code>",
            "<ul>\n<li>a</li>\n<li>b</li>\n</ul>",
            "<ol start=\"3\">\n<li>c</li>\n<li>d</li>\n</ol>",
            "<pre><code>fn main() {}\n</code></pre>",
            "<blockquote>\n<p>quoted</p>\n</blockquote>",
            "<hr>",
            "line<br>\nbreak",
        ] {
            assert!(html.contains(want), "{want:?} not in {html}");
        }
        assert!(
            !html.contains("class="),
            "code language class dropped: {html}"
        );
    }

    #[test]
    fn tables_and_task_lists() {
        let html = render("| a | b |\n|:--|--:|\n| 1 | 2 |\n\n- [x] done\n- [ ] todo\n");
        for want in [
            "<table>",
            "<thead>",
            "<th>a</th>",
            "<tbody>",
            "<td>2</td>",
            "<input disabled=\"\" type=\"checkbox\" checked=\"\">",
            "<input disabled=\"\" type=\"checkbox\">",
        ] {
            assert!(html.contains(want), "{want:?} not in {html}");
        }
        assert!(!html.contains("style"), "{html}");
    }

    #[test]
    fn script_never_becomes_a_tag() {
        for md in [
            "<script>alert(1)</script>",
            "text <script>alert(1)</script> inline",
            "<div>\n<script>alert(1)</script>\n</div>",
            "<SCRIPT SRC=//e.com/x.js></SCRIPT>",
            "<scr<script>ipt>alert(1)</script>",
            "`x`<script>alert(1)</script>",
            "<style>body{display:none}</style>",
            "<iframe src=\"https://e.com\"></iframe>",
            "<svg><script>alert(1)</script></svg>",
            "<math><mi><style><img src=x onerror=alert(1)></style></mi></math>",
            "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
        ] {
            let html = render(md);
            assert_inert(&html);
            assert!(
                !html.to_ascii_lowercase().contains("<script"),
                "{md:?} gave {html}"
            );
        }
        // Raw HTML is shown as the text its author typed.
        let html = render("<script>alert(1)</script>");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        let html = render("a <b>bold</b> word");
        assert_eq!(html, "<p>a &lt;b&gt;bold&lt;/b&gt; word</p>\n");
    }

    #[test]
    fn bad_link_schemes_lose_their_href() {
        for md in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java&#09;script:alert(1))",
            "[x](&#106;avascript:alert(1))",
            "[x]( javascript:alert(1))",
            "[x](<javascript:alert(1)>)",
            "[x](vbscript:msgbox)",
            "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
            "[x][r]\n\n[r]: javascript:alert(1)",
            "<javascript:alert(1)>",
            "![x](javascript:alert(1))",
            "![x](data:image/svg+xml,<svg onload=alert(1)>)",
        ] {
            let html = render(md);
            assert_inert(&html);
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("href=\"javascript"), "{md:?} gave {html}");
            assert!(!lower.contains("href=\"vbscript"), "{md:?} gave {html}");
            assert!(!lower.contains("href=\"data"), "{md:?} gave {html}");
            assert!(!lower.contains("src="), "{md:?} gave {html}");
        }
    }

    #[test]
    fn good_links_keep_href_and_get_rel() {
        let rel = format!("rel=\"{LINK_REL}\"");
        let html = render("[e](https://e.com/a?b=c&d=e \"T\")");
        assert_eq!(
            html,
            format!("<p><a href=\"https://e.com/a?b=c&amp;d=e\" title=\"T\" {rel}>e</a></p>\n")
        );
        for (md, href) in [
            ("<https://e.com>", "https://e.com"),
            ("[m](mailto:a@e.com)", "mailto:a@e.com"),
            ("[r](/notes/abc)", "/notes/abc"),
            ("[h](http://e.com)", "http://e.com"),
        ] {
            let html = render(md);
            assert!(
                html.contains(&format!("<a href=\"{href}\" {rel}>")),
                "{md:?} gave {html}"
            );
        }
        // A raw <a> is text, so no tag there at all, rel or not.
        let html = render("<a href=\"https://e.com\">e</a>");
        assert!(!html.contains("<a "), "{html}");
        // A link can not bring its own rel, target or handlers.
        let html = render("[x](https://e.com){rel=opener target=_blank onclick=alert(1)}");
        assert_inert(&html);
        let links: Vec<_> = tags(&html)
            .into_iter()
            .filter(|(tag, _)| tag == "a")
            .collect();
        let attrs: Vec<&str> = links[0].1.iter().map(|(attr, _)| attr.as_str()).collect();
        assert_eq!((links.len(), attrs), (1, vec!["href", "rel"]), "{html}");
    }

    #[test]
    fn images_only_from_http_and_https() {
        let html = render("![alt](https://e.com/i.png \"t\")");
        assert_eq!(
            html,
            "<p><img src=\"https://e.com/i.png\" alt=\"alt\" title=\"t\"></p>\n"
        );
        for md in [
            "![a](i.png)",
            "![a](/api/notes)",
            "![a](mailto:a@e.com)",
            "![a](ftp://e.com/i)",
        ] {
            let html = render(md);
            assert!(!html.contains("src="), "{md:?} gave {html}");
            assert!(html.contains("<img alt=\"a\">"), "{md:?} gave {html}");
        }
    }

    #[test]
    fn img_onerror_is_dropped() {
        for md in [
            "<img src=x onerror=alert(1)>",
            "text <img src=x onerror=alert(1)> inline",
            "![a](https://e.com/i.png\"onerror=\"alert(1))",
            "![a\" onerror=\"alert(1)](https://e.com/i.png)",
        ] {
            let html = render(md);
            assert_inert(&html);
            assert!(!html.contains("<img src=\"x\""), "{md:?} gave {html}");
        }
        // As text it is shown escaped.
        let html = render("<img src=x onerror=alert(1)>");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn comments_and_entities() {
        let html = render("a <!-- hidden --> b &lt;script&gt; &#x3C;script&#x3E;");
        assert_inert(&html);
        assert!(!html.contains("<!--"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }

    #[test]
    fn deep_blockquote_nesting_is_capped() {
        let md = format!("{}deep\n\n# after", ">".repeat(10_000));
        let html = render(&md);
        assert_inert(&html);
        assert!(html.contains("deep"), "text kept: {html}");
        assert!(html.ends_with("<h1>after</h1>\n"), "depth recovers: {html}");
        assert_eq!(html.matches("<blockquote>").count(), MAX_NESTING, "{html}");
        assert_eq!(html.matches("</blockquote>").count(), MAX_NESTING, "{html}");
    }

    #[test]
    fn nesting_cap_keeps_structure_balanced() {
        let md = "- > 1. ".repeat(100)
            + "text\n\n| a |\n|---|\n| [l](https://e.com) ![i](https://e.com/i) |\n";
        let html = render(&md);
        assert_inert(&html);
        assert!(html.contains("text"), "{html}");
        for tag in ["ul", "li", "ol", "blockquote", "table", "td"] {
            assert_eq!(
                html.matches(&format!("<{tag}")).count(),
                html.matches(&format!("</{tag}>")).count(),
                "{tag} in {html}"
            );
        }
        assert!(html.contains("<td><a href=\"https://e.com\""), "{html}");
        // Exactly at the cap nothing is lost.
        let md = format!("{}x", "> ".repeat(MAX_NESTING - 1));
        assert_eq!(render(&md).matches("<blockquote>").count(), MAX_NESTING - 1);
        assert!(render(&md).contains("<p>x</p>"));
    }

    #[test]
    fn deep_list_and_emphasis_nesting_completes() {
        let lists: String = (0..2_000)
            .map(|i| format!("{}- x\n", "  ".repeat(i)))
            .collect();
        assert_inert(&render(&lists));
        let emphasis = format!("{}x{}", "*_".repeat(10_000), "_*".repeat(10_000));
        assert_inert(&render(&emphasis));
        let brackets = format!(
            "{}x{}",
            "[".repeat(10_000),
            "](javascript:alert(1))".repeat(10_000)
        );
        assert_inert(&render(&brackets));
    }

    /// 20 000 links, half of them hostile: the 100 000 of the brief take
    /// 7 s in a debug build (0.75 s in release, about linear), too long for
    /// a unit test.
    #[test]
    fn many_links_complete() {
        let md: String = (0..10_000)
            .map(|i| format!("[{i}](https://e.com/{i}) [j](javascript:alert({i})) "))
            .collect();
        let html = render(&md);
        assert_inert(&html);
        assert_eq!(html.matches("<a href=").count(), 10_000);
        assert_eq!(html.matches("<a rel=").count(), 10_000);
    }

    #[test]
    fn many_hostile_tags_complete() {
        let md = "<img src=x onerror=alert(1)><script>alert(1)</script>".repeat(5_000);
        assert_inert(&render(&md));
        let md = "<div>\n".repeat(10_000);
        assert_inert(&render(&md));
    }
}
