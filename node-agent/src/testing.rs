//! A stand-in server for tests of code that sends requests through a tower `Service`
//! (a kube `Client` built on one): each request the code sends is handed to the test,
//! which looks at it and answers. The tests of this crate and of the operator use it.
//!
//! Kept in the library, not behind a feature, so that building the tests enables no
//! dependency feature the binaries lack: a test build and the demo's build then share
//! every compiled dependency.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

/// What a call fails with: the test's handle is gone, or it dropped the reply.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Requests waiting for the test; a sender waits while this many are unanswered.
const WAITING: usize = 64;

/// The service side: give it to the code under test.
#[derive(Debug)]
pub struct MockService<Req, Resp> {
    requests: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for MockService<Req, Resp> {
    fn clone(&self) -> Self {
        MockService {
            requests: self.requests.clone(),
        }
    }
}

/// The test's side: receives each request with the means to answer it.
#[derive(Debug)]
pub struct Handle<Req, Resp> {
    requests: mpsc::Receiver<(Req, Reply<Resp>)>,
}

/// Answers one request.
#[derive(Debug)]
pub struct Reply<Resp>(oneshot::Sender<Resp>);

/// A connected service and handle.
pub fn pair<Req, Resp>() -> (MockService<Req, Resp>, Handle<Req, Resp>) {
    let (requests, waiting) = mpsc::channel(WAITING);
    (MockService { requests }, Handle { requests: waiting })
}

impl<Req, Resp> Handle<Req, Resp> {
    /// The next request, or `None` once every service clone is gone.
    pub async fn next_request(&mut self) -> Option<(Req, Reply<Resp>)> {
        self.requests.recv().await
    }
}

impl<Resp> Reply<Resp> {
    /// Sends the answer; it is dropped if the caller stopped waiting.
    pub fn send_response(self, response: Resp) {
        let _ = self.0.send(response);
    }
}

impl<Req, Resp> tower::Service<Req> for MockService<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let requests = self.requests.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            requests
                .send((request, Reply(reply)))
                .await
                .map_err(|_| "the test no longer takes requests")?;
            answer
                .await
                .map_err(|_| Error::from("the test dropped the request without an answer"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn each_request_reaches_the_test_and_its_answer_the_caller() {
        let (mut service, mut handle) = pair::<u32, u32>();
        let answering = tokio::spawn(async move {
            while let Some((n, reply)) = handle.next_request().await {
                if n == 0 {
                    drop(reply);
                } else {
                    reply.send_response(n * 2);
                }
            }
        });
        assert_eq!(
            service.ready().await.expect("ready").call(21).await.ok(),
            Some(42)
        );
        let dropped = service.call(0).await.expect_err("no answer");
        assert!(
            dropped.to_string().contains("without an answer"),
            "{dropped}"
        );
        drop(service);
        answering
            .await
            .expect("the test side ends once the service is gone");
    }
}
