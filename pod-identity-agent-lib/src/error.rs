//! Errors in log lines.

use std::error::Error as StdError;
use std::fmt;

/// Displays an error with its causes, `error: cause: cause`, for log lines: errors' own
/// `Display` leaves the source out, and without it a log says that a call failed but not why.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
