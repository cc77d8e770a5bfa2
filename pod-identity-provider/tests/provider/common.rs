//! Shared test support: a manual clock that knows who sleeps on it, a scripted agent and a
//! bounded `eventually`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_async::rt::sleep::{AsyncSleep, Sleep};
use aws_smithy_async::time::TimeSource;
use pod_identity_core::time::format_rfc3339;
use pod_identity_provider::{Env, PodIdentityCredentialsProvider};
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXNlY3JldA";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
pub const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN";
pub const ACCOUNT_ID: &str = "123456789012";
pub const HOUR: Duration = Duration::from_secs(3600);
pub const MINUTE: Duration = Duration::from_secs(60);
pub const SECOND: Duration = Duration::from_secs(1);

/// A wall clock and sleep driven by hand. Sleeps shorter than [`INSTANT_BELOW`] (HTTP backoff,
/// `Retry-After`) complete at once without moving the clock and are recorded; longer sleeps
/// (the refresh schedule) wait for `advance`.
///
/// Advance only while the provider's tasks are idle (`settled` first): a sleep is relative to
/// the moment it starts, so a jump while a task is between reading the clock and starting its
/// sleep makes that sleep end later than the task planned. Stop the clock at least
/// `INSTANT_BELOW` short of a planned refresh: the task's sleep for the rest would complete at
/// once without the clock moving, and the task would wake and sleep again until the next
/// `advance`, never settling.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<SystemTime>>,
    instant_sleeps: Arc<Mutex<Vec<Duration>>>,
    /// Deadlines of the long sleeps under way (their futures not yet dropped).
    sleeping_until: Arc<Mutex<Vec<SystemTime>>>,
}

/// Removes its deadline from the clock's list when the sleep future is dropped, polled or not.
struct Sleeping {
    list: Arc<Mutex<Vec<SystemTime>>>,
    deadline: SystemTime,
}

impl Drop for Sleeping {
    fn drop(&mut self) {
        let mut list = self.list.lock().expect("lock poisoned");
        if let Some(at) = list.iter().position(|d| *d == self.deadline) {
            list.swap_remove(at);
        }
    }
}

/// Sleeps shorter than this complete at once.
pub const INSTANT_BELOW: Duration = Duration::from_secs(5);

impl ManualClock {
    pub fn new() -> Self {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Self {
            now: Arc::new(watch::channel(start).0),
            instant_sleeps: Arc::default(),
            sleeping_until: Arc::default(),
        }
    }

    pub fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|t| *t += by);
    }

    /// Whether a task sleeps on this clock until after now: a refresh task that did what the
    /// last `advance` made due and planned its next step.
    pub fn has_sleeper(&self) -> bool {
        self.sleepers() > 0
    }

    /// How many sleeps on this clock end after now.
    pub fn sleepers(&self) -> usize {
        let now = self.now();
        self.sleeping_until
            .lock()
            .expect("lock poisoned")
            .iter()
            .filter(|d| **d > now)
            .count()
    }

    /// Waits (bounded) until the refresh task has done what is due at the current time and
    /// sleeps on this clock again: after it, anything the task would have done is done, so
    /// asserting that something did *not* happen is deterministic.
    pub async fn settled(&self) {
        self.settled_tasks(1).await;
    }

    /// Waits (bounded) until every sleep the last `advance` ended has been taken up by its task:
    /// for refresh tasks that may stop sleeping (an idle partition parks), where
    /// [`settled`](Self::settled) would wait for a sleep that never comes.
    pub async fn handled(&self) {
        eventually("the tasks to take up their ended sleeps", || async {
            let now = self.now();
            !self
                .sleeping_until
                .lock()
                .expect("lock poisoned")
                .iter()
                .any(|d| *d <= now)
        })
        .await;
    }

    /// [`settled`](Self::settled) for `tasks` tasks sleeping on this clock at once (one refresh
    /// task per identity-cache partition).
    pub async fn settled_tasks(&self, tasks: usize) {
        eventually("the refresh tasks to sleep on the manual clock", || async {
            self.sleepers() >= tasks
        })
        .await;
    }

    /// The short sleeps completed at once, in order.
    pub fn instant_sleeps(&self) -> Vec<Duration> {
        self.instant_sleeps.lock().expect("lock poisoned").clone()
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        ManualClock::now(self)
    }
}

impl AsyncSleep for ManualClock {
    fn sleep(&self, duration: Duration) -> Sleep {
        if duration < INSTANT_BELOW {
            self.instant_sleeps
                .lock()
                .expect("lock poisoned")
                .push(duration);
            return Sleep::new(async {});
        }
        let deadline = self.now() + duration;
        let mut rx = self.now.subscribe();
        self.sleeping_until
            .lock()
            .expect("lock poisoned")
            .push(deadline);
        let sleeping = Sleeping {
            list: self.sleeping_until.clone(),
            deadline,
        };
        Sleep::new(async move {
            let _sleeping = sleeping;
            let _ = rx.wait_for(|t| *t >= deadline).await;
        })
    }
}

/// The agent's JSON for credentials with this access key, expiring at `expiry`.
pub fn credentials_json(access_key_id: &str, expiry: SystemTime) -> String {
    format!(
        r#"{{"AccessKeyId":"{access_key_id}","SecretAccessKey":"{SECRET_KEY}","Token":"{SESSION_TOKEN}","AccountId":"{ACCOUNT_ID}","Expiration":"{}"}}"#,
        format_rfc3339(expiry)
    )
}

pub fn ok(access_key_id: &str, expiry: SystemTime) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/json")
        .set_body_string(credentials_json(access_key_id, expiry))
}

pub fn status(code: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_string(body)
}

/// Answers from a script, then repeats the last answer.
pub struct Script {
    queue: Mutex<VecDeque<ResponseTemplate>>,
    last: Mutex<ResponseTemplate>,
}

impl Script {
    pub fn new(responses: impl IntoIterator<Item = ResponseTemplate>) -> Self {
        let queue: VecDeque<_> = responses.into_iter().collect();
        let last = queue
            .back()
            .cloned()
            .unwrap_or_else(|| ResponseTemplate::new(500));
        Self {
            queue: Mutex::new(queue),
            last: Mutex::new(last),
        }
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        match self.queue.lock().expect("lock poisoned").pop_front() {
            Some(next) => next,
            None => self.last.lock().expect("lock poisoned").clone(),
        }
    }
}

/// Answers whatever the test set last.
#[derive(Clone)]
pub struct Switch(Arc<Mutex<ResponseTemplate>>);

impl Switch {
    pub fn new(initial: ResponseTemplate) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub fn set(&self, next: ResponseTemplate) {
        *self.0.lock().expect("lock poisoned") = next;
    }
}

impl Respond for Switch {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().expect("lock poisoned").clone()
    }
}

/// A mock agent on loopback answering `GET /v1/credentials` with `responder`.
pub async fn agent(responder: impl Respond + 'static) -> Agent {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/credentials"))
        .respond_with(responder)
        .mount(&server)
        .await;
    Agent(Some(server))
}

/// A wiremock agent that is dropped on a thread of its own.
///
/// `MockServer` checks its mocks when dropped, through a nested `block_on` of a future that takes
/// a tokio lock. Dropped inside a tokio task whose cooperative budget is spent (a test that just
/// awaited many tasks), every poll of that lock yields for want of budget, the nested executor
/// polls again at once, and the thread spins forever. On a fresh thread there is no budget.
#[derive(Debug)]
pub struct Agent(Option<MockServer>);

impl std::ops::Deref for Agent {
    type Target = MockServer;

    fn deref(&self) -> &MockServer {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(server) = self.0.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || drop(server)).join();
        if let Err(panic) = dropped
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

pub fn uri(server: &MockServer) -> String {
    format!("{}/v1/credentials", server.uri())
}

/// A provider for `server` with a fixed token, no process environment and the manual clock.
pub fn provider(server: &MockServer, clock: &ManualClock) -> PodIdentityCredentialsProvider {
    builder(server, clock).build()
}

pub fn builder(server: &MockServer, clock: &ManualClock) -> pod_identity_provider::Builder {
    PodIdentityCredentialsProvider::builder()
        .env(Env::from_vars([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri(server)),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", TOKEN.to_owned()),
        ]))
        .time_source(clock.clone())
        .sleep_impl(clock.clone())
}

pub async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// Polls `condition` until it holds (real time, bounded); panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Polls a future once: `Some` when it completes without waiting.
pub fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// The whole error chain as one string.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}
