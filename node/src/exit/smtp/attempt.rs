//! [`Attempt`]: what one delivery attempt came to, whatever sent it.

use crate::metrics::Label;

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The mail system took it (SMTP 250, or the file is written).
    Delivered,
    /// Try again later. `deferral` marks a 421 or a 4.7.x answer: the
    /// receiving system asks us to slow down.
    Temporary {
        /// `451 4.3.0`, `network`, `tls`, `auth`, `session`, `timeout`, `io`,
        /// `local` (the exit's own storage): never the server's
        /// text, which can name the recipient.
        code: String,
        /// A rate-limiting deferral.
        deferral: bool,
    },
    /// Refused for good (5xx).
    Permanent {
        /// The SMTP code.
        code: String,
    },
}

impl Attempt {
    /// A temporary failure that is not a deferral, with `code`.
    pub fn temporary(code: &str) -> Self {
        Self::Temporary {
            code: code.into(),
            deferral: false,
        }
    }
}

impl Label for Attempt {
    /// The attempt's result, as the `exit_delivery_attempts` metric counts it.
    fn as_label(&self) -> &'static str {
        match self {
            Self::Delivered => "ok",
            Self::Permanent { .. } => "permanent",
            Self::Temporary { deferral: true, .. } => "deferred",
            Self::Temporary { .. } => "temporary",
        }
    }
}
