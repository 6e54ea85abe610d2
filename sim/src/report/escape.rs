//! The HTML escaper the report templates use (configured in `sim/askama.toml` for every
//! `.html` template), and the same escaping as a plain function.
//!
//! It escapes the five characters that matter in HTML text and in quoted attribute
//! values: `&` `<` `>` `"` `'`. Everything else passes through unchanged.

use std::fmt::{self, Write};

/// Escapes `& < > " '` as `&amp; &lt; &gt; &quot; &#39;`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Html;

/// The replacement for `b`, when it needs one.
fn entity(b: u8) -> Option<&'static str> {
    match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'"' => Some("&quot;"),
        b'\'' => Some("&#39;"),
        _ => None,
    }
}

/// Writes `text` to `dest`, escaped.
fn write_escaped<W: Write>(mut dest: W, text: &str) -> fmt::Result {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        if let Some(rep) = entity(b) {
            // `i` is the index of an ASCII byte, so both slices end on char boundaries.
            dest.write_str(&text[last..i])?;
            dest.write_str(rep)?;
            last = i + 1;
        }
    }
    dest.write_str(&text[last..])
}

impl askama::filters::Escaper for Html {
    fn write_escaped_str<W: Write>(&self, dest: W, string: &str) -> fmt::Result {
        write_escaped(dest, string)
    }
}

/// `text`, escaped for HTML text or a quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a> é"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt; é"
        );
        assert_eq!(escape(""), "");
        assert_eq!(escape("plain"), "plain");
    }
}
