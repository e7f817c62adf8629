//! Column layout for the CLI's tables by display width, not by `char` count: a CJK title takes
//! two columns per character and a combining mark none, so `{:<30}` would break alignment.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `s` cut to at most `width` display columns (ending in `…` when cut) and padded with spaces
/// to exactly `width` columns.
pub fn cell(s: &str, width: usize) -> String {
    let mut out = fit(s, width);
    let w = UnicodeWidthStr::width(out.as_str());
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(w)));
    out
}

/// `s` right-aligned in `width` display columns (cut like [`cell`] when longer).
pub fn cell_right(s: &str, width: usize) -> String {
    let cut = fit(s, width);
    let w = UnicodeWidthStr::width(cut.as_str());
    let mut out: String = std::iter::repeat_n(' ', width.saturating_sub(w)).collect();
    out.push_str(&cut);
    out
}

/// `s` cut to at most `width` display columns, ending in `…` when cut; never padded.
pub fn fit(s: &str, width: usize) -> String {
    // Control characters would move the cursor; a title from Plex may carry them.
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if UnicodeWidthStr::width(clean.as_str()) <= width {
        return clean;
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in clean.chars() {
        let cw = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + cw > width - 1 {
            break;
        }
        out.push(c);
        used += cw;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_take_two_columns() {
        let a = cell("進撃の巨人", 12);
        assert_eq!(UnicodeWidthStr::width(a.as_str()), 12);
        assert_eq!(a, "進撃の巨人  ");
        let b = cell("Attack on Titan", 12);
        assert_eq!(UnicodeWidthStr::width(b.as_str()), 12);
        assert!(b.ends_with('…'));
    }

    #[test]
    fn a_cut_never_splits_a_wide_character_past_the_width() {
        let s = cell("進撃の巨人", 6);
        assert_eq!(UnicodeWidthStr::width(s.as_str()), 6);
        assert_eq!(s, "進撃… ");
        assert_eq!(cell_right("7", 3), "  7");
        assert_eq!(fit("a\u{1b}[2Jb", 20), "a [2Jb");
    }
}
