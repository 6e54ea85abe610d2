//! Text made readable for a page: times and durations in one unit (milliseconds),
//! Rust `Debug` forms of events turned into words, and `code` spans as `<code>`.
//!
//! A trace entry's text is what the world recorded (the digest covers it, so it stays
//! as it is); the page shows it through [`trace_text`].

use super::escape::escape;
use super::fmt;

/// Nanoseconds as milliseconds, in the one unit style of the pages: `8,890 ms`,
/// `46.107 ms`, `0 ms`, `< 0.001 ms`.
pub(crate) fn ms(nanos: u64) -> String {
    if nanos == 0 {
        return "0 ms".to_string();
    }
    // Rounded to the microsecond.
    let micros = nanos.saturating_add(500) / 1_000;
    if micros == 0 {
        return "< 0.001 ms".to_string();
    }
    let whole = fmt::int(micros / 1_000);
    let frac = micros % 1_000;
    if frac == 0 {
        format!("{whole} ms")
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{} ms", digits.trim_end_matches('0'))
    }
}

/// The nanoseconds of `digits` (with an optional fraction) in `unit`, if it is one.
fn to_nanos(number: &str, unit: &str) -> Option<u64> {
    let scale: u64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int: u64 = int.parse().ok()?;
    let mut nanos = int.checked_mul(scale)?;
    let mut place = scale;
    for c in frac.chars() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u64::from(c.to_digit(10)?) * place)?;
    }
    Some(nanos)
}

/// Every duration or time in `text` (`19ms`, `0.046107152s`, `t=0.23s`, `525.9ms`)
/// written in milliseconds by [`ms`]; other numbers are left as they are.
pub(crate) fn durations_in_ms(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '.');
        if c.is_ascii_digit() && boundary {
            let start = i;
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let mut k = j;
            while k < chars.len() && chars[k].is_alphabetic() {
                k += 1;
            }
            let number: String = chars[start..j].iter().collect();
            let unit: String = chars[j..k].iter().collect();
            let ends = k == chars.len() || !chars[k].is_alphanumeric();
            if ends && let Some(nanos) = to_nanos(&number, &unit) {
                out.push_str(&ms(nanos));
                i = k;
                continue;
            }
            out.push_str(&number);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `RetryDue` → `retry due`, `retry_after` → `retry after`; words in capitals
/// (`VIOLATION`) and lowercase words stay as they are.
fn words(ident: &str) -> String {
    let has_lower = ident.chars().any(|c| c.is_lowercase());
    let camel = ident.chars().next().is_some_and(char::is_uppercase) && has_lower;
    if !camel {
        return ident.replace('_', " ");
    }
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
        } else if c == '_' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Rust `Debug` forms in `text` made into words: `Reply { req: 0, reply: Err(Unavailable) }`
/// → `reply (req 0, reply err (unavailable))`; quoted strings are kept as they are.
pub(crate) fn debug_to_words(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    // Whether each open brace or parenthesis is a struct's (whose `field: ` loses the
    // colon).
    let mut depth_struct: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A quoted string, escapes and all.
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if chars[i - 1] == '"' {
                    break;
                }
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let in_struct = depth_struct.last() == Some(&true);
            let next = chars.get(i).copied();
            let is_field = in_struct && next == Some(':') && chars.get(i + 1) == Some(&' ');
            let opens = next == Some('(') || (next == Some(' ') && chars.get(i + 1) == Some(&'{'));
            let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
            if preceded_by_digit {
                // A unit after a number (`19ms`): not a name.
                out.push_str(&ident);
            } else if is_field {
                out.push_str(&words(&ident));
                i += 1; // the colon; the space is copied next
            } else if opens || in_struct || !depth_struct.is_empty() {
                out.push_str(&words(&ident));
                if next == Some('(') {
                    out.push(' ');
                }
            } else if ident.chars().next().is_some_and(char::is_uppercase)
                && ident.chars().any(char::is_lowercase)
                && ident.chars().skip(1).any(char::is_uppercase)
            {
                // A bare CamelCase name (`RetryDue`) at the top level.
                out.push_str(&words(&ident));
            } else {
                out.push_str(&ident);
            }
            continue;
        }
        match c {
            '{' => {
                depth_struct.push(true);
                out.push('(');
                if chars.get(i + 1) == Some(&' ') {
                    i += 1;
                }
            }
            '(' => {
                depth_struct.push(false);
                out.push('(');
            }
            '}' => {
                depth_struct.pop();
                if out.ends_with(' ') {
                    out.pop();
                }
                out.push(')');
            }
            ')' => {
                depth_struct.pop();
                out.push(')');
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// A trace entry's text as a page shows it: `Debug` forms in words, durations in ms.
pub(crate) fn trace_text(text: &str) -> String {
    durations_in_ms(&debug_to_words(text))
}

/// `text` as escaped HTML with each `` `span` `` in `<code>` (an unpaired backtick is
/// kept as it is).
pub(crate) fn code_spans(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    let mut out = String::with_capacity(text.len() + 16);
    let pairs = (parts.len() - 1) / 2;
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 && i <= pairs * 2 {
            out.push_str("<code>");
            out.push_str(&escape(part));
            out.push_str("</code>");
        } else {
            if i > pairs * 2 {
                out.push('`');
            }
            out.push_str(&escape(part));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unit_for_times_and_durations() {
        assert_eq!(ms(0), "0 ms");
        assert_eq!(ms(19_000_000), "19 ms");
        assert_eq!(ms(46_107_152), "46.107 ms");
        assert_eq!(ms(8_890_000_000), "8,890 ms");
        assert_eq!(ms(200), "< 0.001 ms");
        assert_eq!(
            durations_in_ms("req 0 answered after 0.046107152s (t=0.2s), wait 19ms; 3 calls"),
            "req 0 answered after 46.107 ms (t=200 ms), wait 19 ms; 3 calls"
        );
        assert_eq!(durations_in_ms("[20ms, 8890ms)"), "[20 ms, 8,890 ms)");
        // Not durations: versions, names, plain numbers.
        assert_eq!(
            durations_in_ms("v2s x3ms 1.2.3 4 sagas"),
            "v2s x3ms 1.2.3 4 sagas"
        );
    }

    #[test]
    fn debug_forms_become_words() {
        assert_eq!(
            trace_text("Reply { req: 0, attempt: 1, reply: Err(Unavailable) }"),
            "reply (req 0, attempt 1, reply err (unavailable))"
        );
        assert_eq!(trace_text("Arrive(Steady)"), "arrive (steady)");
        assert_eq!(
            trace_text("RetryDue { req: 4, attempt: 1 }"),
            "retry due (req 4, attempt 1)"
        );
        assert_eq!(trace_text("Tick"), "Tick");
        assert_eq!(trace_text("HealCheck"), "heal check");
        assert_eq!(
            trace_text("req 5 answered Fallback(Rejected { retry_after: 525.936841ms }) after 0ms"),
            "req 5 answered fallback (rejected (retry after 525.937 ms)) after 0 ms"
        );
        assert_eq!(
            trace_text("VIOLATION breaker.no_call_while_open violated at t=0.231673703s: a call"),
            "VIOLATION breaker.no_call_while_open violated at t=231.674 ms: a call"
        );
        assert_eq!(
            trace_text("Put { key: \"a b: {c}\" }"),
            "put (key \"a b: {c}\")"
        );
        assert!(!trace_text("Msg { a: Some(X { b: [1, 2] }) }").contains('{'));
    }

    #[test]
    fn backticks_become_code() {
        assert_eq!(
            code_spans("the Go outbox's `MarkFailed` <b>"),
            "the Go outbox&#39;s <code>MarkFailed</code> &lt;b&gt;"
        );
        assert_eq!(
            code_spans("`>=` for `>`"),
            "<code>&gt;=</code> for <code>&gt;</code>"
        );
        assert_eq!(code_spans("odd ` one"), "odd ` one");
        assert_eq!(code_spans(""), "");
    }
}
