//! Redaction of sensitive values in logs, as arti's `safelog::Sensitive`.
//!
//! A relay must never write a peer's IP address, a recipient or a message to
//! a log. Values that could carry one are wrapped in [`Sensitive`] before they
//! go anywhere near `tracing`; its `Debug` and `Display` print `[scrubbed]`.
//! There is deliberately no switch to turn this off.

use core::fmt;

/// A value that must not reach a log line. Formatting prints `[scrubbed]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value, for the code that needs it (never for logging).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let s = Sensitive::new("203.0.113.7");
        assert_eq!(
            format!("{s} {s:?} {s:#?}"),
            "[scrubbed] [scrubbed] [scrubbed]"
        );
        assert_eq!(*s.expose(), "203.0.113.7");
    }
}
