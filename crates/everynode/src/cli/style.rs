//! Colours, only on a terminal and never with `--no-color` or `NO_COLOR`.

/// Whether to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour when stdout is a terminal, `--no-color` is not given and `NO_COLOR` is unset.
    pub fn detect(no_color: bool) -> Self {
        use std::io::IsTerminal;
        let color = !no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        Self { color }
    }

    /// No colour.
    #[cfg(test)]
    pub fn plain() -> Self {
        Self { color: false }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Bold.
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Green (done, healthy).
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Yellow (in progress).
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Blue (old but fine).
    pub fn blue(self, text: &str) -> String {
        self.paint("34", text)
    }

    /// Red (a problem).
    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Magenta (misplaced).
    pub fn magenta(self, text: &str) -> String {
        self.paint("35", text)
    }

    /// Grey (not applicable).
    pub fn grey(self, text: &str) -> String {
        self.paint("90", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_style_adds_no_escape_codes() {
        assert_eq!(Style::plain().red("x"), "x");
        assert_eq!(Style { color: true }.red("x"), "\x1b[31mx\x1b[0m");
    }
}
