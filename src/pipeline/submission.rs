//! Submissions that run as tasks of their own, for the front doors.
//!
//! An issuance, once begun, must end — issued, failed or denied, and recorded so — whatever
//! happens to the request that asked for it. A client that closes its connection makes the
//! server drop the request's future. Had that future been the issuance, it would stop
//! between reserving the serial and recording the certificate, and the CA's certificate
//! would be lost. As a task of its own it goes on.
//!
//! And a front door waits for it only as long as its clients do: a slow CA (an upstream
//! ACME CA validating its own order) can take minutes. After the wait the front door
//! answers "ask again later" in its protocol's words: ACME `processing`, EST 202, SCEP
//! PENDING. The later request reads the outcome from the request's state in the store,
//! which the task records. (The ACME front door also keeps the task's own outcome, for the
//! problem type of a refusal.)
//!
//! May import: the parent module, model, pkix, tokio.

use std::time::Duration;

use uuid::Uuid;

use super::{Outcome, Pipeline, PipelineError};
use crate::model::EnrollmentRequest;
use crate::pkix::csr::VerifiedCsr;

/// How long a front door waits for a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until it ends: for answers that cannot be asked for again (a key made by the server,
    /// say).
    ToTheEnd,
    /// At most this long; zero answers at once.
    AtMost(Duration),
}

impl Wait {
    /// At most `ms` milliseconds (a front door's configured wait).
    pub fn millis(ms: u64) -> Self {
        Wait::AtMost(Duration::from_millis(ms))
    }
}

/// What a submission came to within its wait.
#[derive(Debug)]
pub enum Submitted {
    /// It ended.
    Ended(Result<Outcome, PipelineError>),
    /// It goes on.
    Continuing(Submission),
}

/// A submission still under way.
#[derive(Debug)]
pub struct Submission {
    request_id: Uuid,
    task: tokio::task::JoinHandle<Result<Outcome, PipelineError>>,
}

/// The reason a submission still under way is answered as pending.
pub const STILL_ISSUING: &str = "the CA has not answered yet";

impl Submission {
    /// Its request's id.
    pub fn request_id(&self) -> Uuid {
        self.request_id
    }

    /// Wait for its outcome.
    pub async fn outcome(self) -> Result<Outcome, PipelineError> {
        ended(self.task.await)
    }
}

impl Submitted {
    /// The outcome, with a submission still under way answered as pending (reason
    /// [`STILL_ISSUING`]): for front doors whose clients ask again for a pending request,
    /// and are then answered from the store.
    pub fn or_pending(self) -> Result<Outcome, PipelineError> {
        match self {
            Submitted::Ended(outcome) => outcome,
            Submitted::Continuing(submission) => Ok(Outcome::Pending {
                request_id: submission.request_id,
                reason: STILL_ISSUING.into(),
            }),
        }
    }
}

/// A task's end as an outcome (a task that panicked has none).
fn ended(
    joined: Result<Result<Outcome, PipelineError>, tokio::task::JoinError>,
) -> Result<Outcome, PipelineError> {
    joined.unwrap_or_else(|e| Err(PipelineError::Aborted(e.to_string())))
}

impl Pipeline {
    /// [`Pipeline::submit`] (or [`Pipeline::submit_verified`] with `csr`) as a task of its
    /// own. The decision is always waited for — a denial or a hold for approval is answered
    /// as such — and the CA's part as `wait` says.
    pub async fn submit_within(
        &self,
        request: EnrollmentRequest,
        csr: Option<VerifiedCsr>,
        wait: Wait,
    ) -> Submitted {
        let request_id = request.request_id;
        let pipeline = self.clone();
        let (issuing, approved) = tokio::sync::oneshot::channel();
        let parsed = csr.map_or_else(|| VerifiedCsr::parse(&request.csr_der), Ok);
        let mut task =
            tokio::spawn(async move { pipeline.submit_csr(request, parsed, Some(issuing)).await });
        // The task signals when the CA's part begins, or drops the sender when it ends
        // otherwise (a denial, a hold for approval, an error), so this always resolves. Only
        // the signal is awaited: a zero wait then answers every approved request as pending,
        // even one whose CA was quick enough to finish first (the client asks again).
        let joined = match (approved.await, wait) {
            // Decided otherwise: the decision is being recorded.
            (Err(_), _) | (Ok(()), Wait::ToTheEnd) => Some((&mut task).await),
            // Not even polled once more: a timer of zero still waits a tick.
            (Ok(()), Wait::AtMost(wait)) if wait.is_zero() => None,
            (Ok(()), Wait::AtMost(wait)) => tokio::time::timeout(wait, &mut task).await.ok(),
        };
        match joined {
            Some(joined) => Submitted::Ended(ended(joined)),
            None => Submitted::Continuing(Submission { request_id, task }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::ca::{CaAdapter, CaError, IssuanceOrder, IssuedCertificate};
    use crate::clock::SystemClock;
    use crate::model::{Credential, Identifier, Identity, KeyType, Protocol};
    use crate::store::RequestState;

    /// The built-in CA behind a gate: it signs once the test opens the gate.
    #[derive(Debug)]
    struct Gated {
        inner: Arc<dyn CaAdapter>,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl CaAdapter for Gated {
        fn id(&self) -> &str {
            self.inner.id()
        }
        fn chain(&self) -> Vec<Vec<u8>> {
            self.inner.chain()
        }
        fn trust_anchors(&self) -> Vec<Vec<u8>> {
            self.inner.trust_anchors()
        }
        async fn issue(&self, order: &IssuanceOrder) -> Result<IssuedCertificate, CaError> {
            let _open = self.gate.acquire().await.expect("the gate stays");
            self.inner.issue(order).await
        }
    }

    /// A pipeline whose `server` template signs through a closed gate.
    async fn gated_pipeline(dir: &std::path::Path) -> (Pipeline, Arc<Gated>) {
        let mut config = crate::config::Config::load_default().unwrap();
        config.server.data_dir = dir.to_path_buf();
        config.templates.get_mut("server").unwrap().ca = Some("gated".into());
        let boot = crate::server::bootstrap(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let gated = Arc::new(Gated {
            inner: boot.pipeline.ca().clone(),
            gate: tokio::sync::Semaphore::new(0),
        });
        let adapters = BTreeMap::from([("gated".to_string(), gated.clone() as Arc<dyn CaAdapter>)]);
        (boot.pipeline.with_ca_adapters(adapters), gated)
    }

    fn enrollment(name: &str) -> EnrollmentRequest {
        let names = [Identifier::dns(name).unwrap()];
        let generated = crate::pkix::keygen::key_and_csr(KeyType::EcdsaP256, None, &names).unwrap();
        EnrollmentRequest {
            request_id: Uuid::now_v7(),
            protocol: Protocol::Api,
            identity: Identity {
                name: "pipeline-test".into(),
                roles: vec!["admin".into()],
                credential: Credential::System,
            },
            csr_der: generated.csr_der,
            template: "server".into(),
            requested_identifiers: None,
            validity_days: None,
            resource: None,
            metadata: BTreeMap::new(),
            renews: None,
            client: None,
        }
    }

    /// The request's state once `done` says it is reached (the store is written by a task).
    async fn state_when(
        pipeline: &Pipeline,
        id: Uuid,
        done: impl Fn(&RequestState) -> bool,
    ) -> RequestState {
        for _ in 0..500 {
            if let Some(state) = pipeline.request_state(id).await.unwrap() {
                if done(&state) {
                    return state;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("request {id} never reached the state");
    }

    /// The certificate `submission` (of request `id`) ends with, its request recorded issued.
    async fn ends_issued(
        pipeline: &Pipeline,
        id: Uuid,
        submission: Submission,
    ) -> Box<crate::model::CertificateRecord> {
        let Ok(Outcome::Issued(record)) = submission.outcome().await else {
            panic!("not issued");
        };
        assert_eq!(
            pipeline.request_state(id).await.unwrap(),
            Some(RequestState::Issued {
                serial: record.serial.clone()
            })
        );
        record
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_submission_outlasting_its_wait_goes_on_and_ends_issued() {
        let dir = tempfile::tempdir().unwrap();
        let (pipeline, gated) = gated_pipeline(dir.path()).await;
        let request = enrollment("slow.test");
        let id = request.request_id;
        let wait = Wait::AtMost(Duration::from_millis(50));
        let Submitted::Continuing(submission) = pipeline.submit_within(request, None, wait).await
        else {
            panic!("the gated CA answered within the wait");
        };
        assert_eq!(submission.request_id(), id);
        assert!(matches!(
            pipeline.request_state(id).await.unwrap(),
            Some(RequestState::Issuing { .. })
        ));
        gated.gate.add_permits(1);
        let record = ends_issued(&pipeline, id, submission).await;
        assert!(pipeline
            .store()
            .certificate(&record.serial)
            .unwrap()
            .is_some());
        // A decision is answered as such, however short the wait.
        let mut unreadable = enrollment("unreadable.test");
        unreadable.csr_der = b"not a CSR".to_vec();
        assert!(matches!(
            pipeline
                .submit_within(unreadable, None, Wait::AtMost(Duration::ZERO))
                .await,
            Submitted::Ended(Ok(Outcome::Denied { .. }))
        ));
        // Answered as pending by front doors that read the store afterwards.
        let again = enrollment("slow-again.test");
        let again_id = again.request_id;
        let pending = pipeline
            .submit_within(again, None, Wait::AtMost(Duration::ZERO))
            .await
            .or_pending();
        assert!(matches!(
            pending,
            Ok(Outcome::Pending { request_id, ref reason })
                if request_id == again_id && reason == STILL_ISSUING
        ));
        gated.gate.add_permits(1);
        state_when(&pipeline, again_id, |s| {
            matches!(s, RequestState::Issued { .. })
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_zero_wait_answers_pending_even_when_the_ca_is_quick() {
        let dir = tempfile::tempdir().unwrap();
        let (pipeline, gated) = gated_pipeline(dir.path()).await;
        // The gate is open before the request comes: the CA signs at once.
        gated.gate.add_permits(1);
        let request = enrollment("quick.test");
        let id = request.request_id;
        let Submitted::Continuing(submission) = pipeline
            .submit_within(request, None, Wait::AtMost(Duration::ZERO))
            .await
        else {
            panic!("a zero wait answered with the outcome");
        };
        ends_issued(&pipeline, id, submission).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_caller_that_goes_away_does_not_cut_the_issuance_short() {
        let dir = tempfile::tempdir().unwrap();
        let (pipeline, gated) = gated_pipeline(dir.path()).await;
        let request = enrollment("hung-up.test");
        let id = request.request_id;
        // The handler of a request whose client hangs up: dropped while the CA signs.
        let handler = tokio::spawn({
            let pipeline = pipeline.clone();
            async move { pipeline.submit_within(request, None, Wait::ToTheEnd).await }
        });
        state_when(&pipeline, id, |s| matches!(s, RequestState::Issuing { .. })).await;
        handler.abort();
        assert!(handler.await.unwrap_err().is_cancelled());
        gated.gate.add_permits(1);
        let RequestState::Issued { serial } = state_when(&pipeline, id, |s| {
            !matches!(s, RequestState::Issuing { .. })
        })
        .await
        else {
            panic!("the issuance did not end issued");
        };
        assert!(pipeline.store().certificate(&serial).unwrap().is_some());
    }
}
