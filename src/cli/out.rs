//! The CLI's stdout. `println!` panics when the reader went away ("failed printing to stdout:
//! Broken pipe", e.g. `plexsync activity --json | head -1`); everything the CLI prints goes
//! through [`outln!`](crate::cli::outln) / [`out!`](crate::cli::out) instead, which end the
//! process quietly with status 0 when stdout is closed: the reader has what it wanted.

use std::io::Write;

/// `text` without terminal control characters (line breaks and tabs kept): show titles, library
/// names and server names come from Plex and the tracker, and one carrying an escape sequence
/// must not retitle, clear or drive the terminal of whoever runs a command.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Write to stdout; a closed pipe exits 0, any other write error exits 1 with a message.
pub fn write(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let mut o = std::io::stdout().lock();
    if let Err(e) = o
        .write_all(printable(&text).as_bytes())
        .and_then(|()| o.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // stderr may be closed too; nothing more can be said then.
        let _ = writeln!(std::io::stderr(), "plexsync: writing to stdout failed: {e}");
        std::process::exit(1);
    }
}

/// `print!` that ends the command quietly on a closed stdout.
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` that ends the command quietly on a closed stdout.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[allow(unused_imports)] // `out!` is for the commands that print without a newline
pub(crate) use {out, outln};

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_the_terminal() {
        let t = super::printable("Evil\u{1b}]0;owned\u{7}\u{1b}[2J\tend\n");
        assert_eq!(t, "Evil ]0;owned  [2J\tend\n");
        assert!(matches!(
            super::printable("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
