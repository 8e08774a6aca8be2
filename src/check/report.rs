//! A check run for people (a table), for tools (JSON) and for CI (JUnit XML).

use std::fmt::Write;

use serde_json::json;

use super::{CheckRun, Grade};

/// Tables of several runs (one per rule of a config), one after the other.
pub fn text(runs: &[CheckRun]) -> String {
    runs.iter().map(table).collect::<Vec<_>>().join("\n")
}

/// A table: one line per check, its grade and its one-line reason, then the counts.
fn table(run: &CheckRun) -> String {
    let t = &run.target;
    let mut out = format!(
        "callback-sim check {} ({} {}, timeout {} ms)\n\n",
        t.url,
        t.dialect,
        t.kind,
        t.timeout.as_millis()
    );
    for c in &run.checks {
        let _ = writeln!(
            out,
            "  {:<15} {:<5} {}",
            c.name,
            c.result.as_str().to_uppercase(),
            c.detail
        );
    }
    let _ = writeln!(
        out,
        "\n{} pass, {} warn, {} fail — {} callbacks in {:.1} s",
        run.count(Grade::Pass),
        run.count(Grade::Warn),
        run.count(Grade::Fail),
        run.requests,
        run.elapsed.as_secs_f64()
    );
    out
}

/// One run as `{"target","dialect","kind","checks":[{"name","result","detail"}],"summary":{"pass","warn","fail"}}`;
/// several (one per rule of a config) as an array of them.
pub fn json(runs: &[CheckRun]) -> String {
    let mut v: Vec<serde_json::Value> = runs.iter().map(object).collect();
    let v = if v.len() == 1 {
        v.remove(0)
    } else {
        serde_json::Value::Array(v)
    };
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn object(run: &CheckRun) -> serde_json::Value {
    json!({
        "target": run.target.url.to_string(),
        "dialect": run.target.dialect.as_str(),
        "kind": run.target.kind.as_str(),
        "checks": run.checks,
        "summary": {
            "pass": run.count(Grade::Pass),
            "warn": run.count(Grade::Warn),
            "fail": run.count(Grade::Fail),
        },
        "requests": run.requests,
        "elapsed_ms": run.elapsed.as_millis() as u64,
    })
}

/// JUnit XML: one `testsuite` per run, one `testcase` per check, a `failure` element per fail
/// (a warn is a passing testcase with its reason in `system-out`).
pub fn junit(runs: &[CheckRun]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"callback-sim check\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        runs.iter().map(|r| r.checks.len()).sum::<usize>(),
        runs.iter().map(|r| r.count(Grade::Fail)).sum::<usize>(),
        runs.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>(),
    );
    for run in runs {
        suite(&mut out, run);
    }
    out.push_str("</testsuites>\n");
    out
}

fn suite(out: &mut String, run: &CheckRun) {
    let t = &run.target;
    let _ = writeln!(
        out,
        "  <testsuite name=\"{name}\" tests=\"{n}\" failures=\"{f}\" errors=\"0\" skipped=\"0\" time=\"{s:.3}\">",
        n = run.checks.len(),
        f = run.count(Grade::Fail),
        s = run.elapsed.as_secs_f64(),
        name = escape(&format!("{} {} {}", t.dialect, t.kind, t.url)),
    );
    for c in &run.checks {
        let _ = write!(
            out,
            "    <testcase classname=\"callback-sim.check\" name=\"{}\">",
            escape(c.name)
        );
        match c.result {
            Grade::Fail => {
                let _ = write!(
                    out,
                    "<failure message=\"{m}\" type=\"fail\">{m}</failure>",
                    m = escape(&c.detail)
                );
            }
            Grade::Warn => {
                let _ = write!(out, "<system-out>warn: {}</system-out>", escape(&c.detail));
            }
            Grade::Pass => {}
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n");
}

/// Text as XML attribute and element content.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot; ");
    }
}
