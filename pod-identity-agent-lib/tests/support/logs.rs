//! Log capture for tracing: one global subscriber writes JSON lines (debug level and up, or from
//! the level a capture asks for) into the capture of the thread that logged, if it has one.
//!
//! One global subscriber serves every test: per-thread scoped subscribers race with tracing's
//! global callsite-interest cache when tests run in parallel, and lose events. A
//! `#[tokio::test]` runs on one thread, the servers it spawns included, so a test's capture
//! holds its own lines and no other test's.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, Once};

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::SubscriberExt;

/// The lines captured so far.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

thread_local! {
    /// The capture of this thread and the lowest level it takes.
    static CAPTURE: RefCell<Option<(Logs, Level)>> = const { RefCell::new(None) };
}

fn capturing(level: Level) -> bool {
    CAPTURE.with(|capture| {
        capture
            .borrow()
            .as_ref()
            .is_some_and(|(_, lowest)| level <= *lowest)
    })
}

/// Writes into the capture of the current thread.
struct ThreadCapture;

impl io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some((logs, _)) = &*capture.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops capturing when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Captures every line at debug level and up logged on this thread from now until the guard is
/// dropped.
pub fn capture() -> (Logs, CaptureGuard) {
    capture_from(Level::DEBUG)
}

/// [`capture`] from `lowest` up (`Level::TRACE`: everything).
pub fn capture_from(lowest: Level) -> (Logs, CaptureGuard) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Threads without a capture skip formatting. The filter is asked at every event (a
        // dynamic filter's answer is not cached per callsite), as capturing changes.
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| ThreadCapture)
            .with_filter(dynamic_filter_fn(|metadata, _| {
                capturing(*metadata.level())
            }));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let logs = Logs::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some((logs.clone(), lowest)));
    (logs, CaptureGuard)
}
