//! Password hashing with Argon2id, run on a few dedicated threads under the
//! kernel's idle scheduling class, so that a login storm never occupies the
//! async threads and never takes CPU the game needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use tokio::sync::{oneshot, OnceCell};

/// The nice value of the hashing threads where the idle class is refused:
/// the lowest (0 is normal).
///
/// The hashing threads run under `SCHED_IDLE`: a game thread that wakes
/// takes the core from a hash at once, and a hash runs only on a core the
/// game leaves idle. Nice 19 alone was not enough: a nice-19 thread still
/// gets about 1.5 % of a busy core and keeps its slice until the scheduler
/// next looks, and with 2,000 players and 1,000 logins on two cores the
/// players' move→ack p99 rose from 57 to 73 ms (median of three); under
/// `SCHED_IDLE` it stayed at 56 ms, with the logins as fast as before.
pub const HASH_NICE: i32 = 19;

/// Hashes that may wait per hashing thread. A hash takes tens of
/// milliseconds in a release build, so a full queue is about a second and a
/// half of work; past it a login is refused at once (`Busy`) rather than
/// queued behind a flood from many addresses, which would hold its
/// connection and memory and answer it only after its client gave up.
pub const QUEUED_PER_THREAD: usize = 32;

/// Why hashing or verification failed. Neither carries the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Argon2 refused its input (only possible with broken parameters).
    #[error("cannot hash password: {0}")]
    Hash(argon2::password_hash::Error),
    /// A stored hash is not a PHC string Argon2 understands.
    #[error("stored password hash is unreadable: {0}")]
    Corrupt(argon2::password_hash::Error),
    /// The hashing thread died or the hasher is shutting down.
    #[error("password hashing is unavailable")]
    Unavailable,
    /// Too many hashes are waiting already.
    #[error("too many password checks are waiting")]
    Busy,
}

/// Hash a password with Argon2id and a random salt, returning a PHC string
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). CPU-heavy: call it off the async
/// threads, as `Hasher` does.
///
/// # Errors
/// `PasswordError::Hash` if Argon2 refuses the input.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Check a password against a PHC string, with the parameters stored in it (so
/// hashes made with older parameters keep working). CPU-heavy, like
/// `hash_password`.
///
/// # Errors
/// `PasswordError::Corrupt` if `phc` cannot be parsed.
pub fn verify_password(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(PasswordError::Corrupt)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Corrupt(e)),
    }
}

/// A unit of hashing work.
type Job = Box<dyn FnOnce() + Send>;

/// Runs Argon2 on its own threads, one hash per thread at a time.
#[derive(Debug)]
pub struct Hasher {
    /// Work for the threads, which end when this is dropped. Each thread takes
    /// the next job as it finishes one, so the threads cap the concurrent
    /// hashes: more would only queue in the kernel's scheduler and slow every
    /// request down together.
    jobs: std_mpsc::Sender<Job>,
    /// Jobs sent and not finished (queued or running).
    pending: Arc<AtomicUsize>,
    /// The most `pending` may reach.
    max_pending: usize,
    /// A hash of a random password, verified against when the account does not
    /// exist so that "no such user" costs as much time as "wrong password".
    dummy: OnceCell<String>,
}

impl Hasher {
    /// A hasher with `threads` (at least one) hashing threads, each with
    /// `QUEUED_PER_THREAD` hashes that may wait for it.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    #[must_use]
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Self::with_queue(threads, threads * (QUEUED_PER_THREAD + 1))
    }

    /// A hasher with `threads` (at least one) hashing threads and at most
    /// `max_pending` hashes waiting or running at once.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread.
    #[must_use]
    pub fn with_queue(threads: usize, max_pending: usize) -> Self {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("meridian-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only while waiting for a job, never
                        // while hashing.
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("start a password hashing thread");
        }
        Self {
            jobs,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: max_pending.max(1),
            dummy: OnceCell::new(),
        }
    }

    /// A hasher with one thread per available core.
    #[must_use]
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Hash a new password.
    ///
    /// # Errors
    /// `PasswordError` if Argon2 fails or the blocking task dies.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_password(&password)).await
    }

    /// Check `password` against `phc`, or, when there is no hash (unknown user,
    /// or a guest account without a password), against a dummy hash so that the
    /// answer takes the same time; the result is then always `false`.
    ///
    /// # Errors
    /// `PasswordError::Corrupt` if the stored hash is unreadable; others as `hash`.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        match phc {
            Some(phc) => self.run(move || verify_password(&password, &phc)).await,
            None => {
                let dummy = self
                    .dummy
                    .get_or_try_init(|| {
                        let mut random = [0u8; 16];
                        rand::rng().fill_bytes(&mut random);
                        self.hash(hex::encode(random))
                    })
                    .await?
                    .clone();
                self.run(move || verify_password(&password, &dummy)).await?;
                Ok(false)
            }
        }
    }

    /// Run `work` on a hashing thread once one is free.
    ///
    /// # Errors
    /// `PasswordError::Busy` at once when `max_pending` jobs are waiting or
    /// running; `Unavailable` if the threads are gone; else what `work` says.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        // A place is taken only while one is free, so a refusal holds none.
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pending).then_some(n + 1)
            })
            .map_err(|_| PasswordError::Busy)?;
        let slot = Pending(Arc::clone(&self.pending));
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A request abandoned while queued (its client gave up) costs nothing.
            let result = (!reply.is_closed()).then(work);
            // The place is given back before the answer, so a caller that has
            // its answer sees the place free; a job dropped unrun gives it
            // back as it drops.
            drop(slot);
            if let Some(result) = result {
                let _ = reply.send(result);
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| PasswordError::Unavailable)?;
        answer.await.map_err(|_| PasswordError::Unavailable)?
    }

    /// Hashes waiting or running now.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// One job's place in the hasher's queue, given back when dropped.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Put the calling thread in the idle scheduling class, or, if the kernel
/// refuses, at `HASH_NICE`. On Linux both belong to the thread, and pid or
/// `who` 0 names the calling thread. Lowering needs no privilege.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler only reads `param`, which outlives the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot put a password hashing thread in the idle class; lowering its nice value"
        );
        // SAFETY: setpriority only reads its integer arguments.
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_NICE) } != 0;
        if failed {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a password hashing thread"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash gets its own salt");
        assert!(verify_password("correct horse", &a).unwrap());
        assert!(!verify_password("correct horsE", &a).unwrap());
        assert!(!verify_password("", &b).unwrap());
    }

    #[test]
    fn an_unreadable_hash_is_an_error_not_a_mismatch() {
        let err = verify_password("whatever", "not-a-phc-string").unwrap_err();
        assert!(matches!(err, PasswordError::Corrupt(_)), "{err}");
    }

    #[tokio::test]
    async fn the_hasher_verifies_and_refuses_missing_hashes() {
        let hasher = Hasher::new(2);
        let phc = hasher.hash("hunter2hunter2".into()).await.unwrap();
        assert!(hasher
            .verify("hunter2hunter2".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!hasher.verify("nope".into(), Some(phc)).await.unwrap());
        assert!(!hasher.verify("hunter2hunter2".into(), None).await.unwrap());
        assert!(hasher.dummy.get().is_some(), "the dummy hash was used");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_as_jobs_finish() {
        let hasher = Arc::new(Hasher::with_queue(1, 2));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let mut busy = Vec::new();
        for _ in 0..2 {
            let (hasher, held) = (Arc::clone(&hasher), Arc::clone(&held));
            busy.push(tokio::spawn(async move {
                hasher
                    .run(move || {
                        let _ = held.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
            }));
        }
        while hasher.pending() < 2 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.run(|| Ok(())).await;
        assert!(matches!(refused, Err(PasswordError::Busy)), "{refused:?}");
        assert_eq!(hasher.pending(), 2, "a refusal holds no place");
        release.send(()).unwrap();
        release.send(()).unwrap();
        for job in busy {
            job.await.unwrap().unwrap();
        }
        assert_eq!(hasher.pending(), 0);
        hasher.run(|| Ok(())).await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_in_the_idle_scheduling_class() {
        let hasher = Hasher::new(1);
        // SAFETY: sched_getscheduler only reads its integer argument.
        let policy = hasher
            .run(|| Ok(unsafe { libc::sched_getscheduler(0) }))
            .await
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        // SAFETY: as above.
        let ours = unsafe { libc::sched_getscheduler(0) };
        assert_eq!(
            ours,
            libc::SCHED_OTHER,
            "only the hashing threads are lowered"
        );
    }

    #[tokio::test]
    async fn no_more_than_the_permitted_hashes_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = Arc::new(Hasher::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (hasher, running, peak) = (hasher.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(30));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
