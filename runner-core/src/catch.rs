//! Panic containment. A panic in a component (a stage, the sink, a stage's
//! `finished` hook) is caught where the runtime calls it and becomes that
//! event's failure: it must never take down the task that serves every
//! other event, nor leak a router slot.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures::FutureExt;

/// The message of a caught panic.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
        .to_string()
}

/// Runs `f`; a panic becomes `Err` with its message.
// AssertUnwindSafe: after a panic the caller only records the failure; it
// does not look at what `f` may have left half-changed.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// Awaits `f`; a panic in any of its polls becomes `Err` with its message.
pub(crate) async fn catch_future<F: Future>(f: F) -> Result<F::Output, String> {
    AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .map_err(|p| panic_message(&*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_panics_become_their_message() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> () { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        assert_eq!(
            catch(|| std::panic::panic_any(5u8)),
            Err("(non-string panic payload)".into())
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_later_poll_is_caught() {
        let f = async {
            tokio::task::yield_now().await;
            panic!("late");
        };
        assert_eq!(catch_future(f).await, Err::<(), _>("late".into()));
        assert_eq!(catch_future(async { 3 }).await, Ok(3));
    }
}
