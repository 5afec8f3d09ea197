//! Ordered parallel map: items are processed on worker threads as soon as one is free, and their
//! results reach the sink in input order, so output never depends on the thread count. Memory stays
//! bounded: no worker runs more than `lookahead` items ahead of the sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

/// Feeds `source` through `work` on `threads` threads (at least one) and hands results to `sink` in
/// source order on the calling thread. Stops at the first error in source order (an `Err` item of the
/// source, of `work`, or of `sink`) and returns it; items after it may have been processed, never sunk.
pub fn ordered_map<I, T, U, E, W, S>(source: I, threads: usize, lookahead: usize, work: W, mut sink: S) -> Result<(), E>
where
    I: Iterator<Item = Result<T, E>> + Send,
    T: Send,
    U: Send,
    E: Send,
    W: Fn(T) -> Result<U, E> + Sync,
    S: FnMut(U) -> Result<(), E>,
{
    let threads = threads.max(1);
    let lookahead = lookahead.max(1) as u64;
    let source = Mutex::new((source, 0u64));
    // The sequence number the sink waits for next; workers wait while they are too far ahead of it.
    let gate = (Mutex::new(0u64), Condvar::new());
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(u64, Result<U, E>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (source, gate, abort, work) = (&source, &gate, &abort, &work);
            scope.spawn(move || loop {
                if abort.load(Ordering::Relaxed) {
                    break;
                }
                let (seq, item) = {
                    let mut s = source.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(item) = s.0.next() else { break };
                    s.1 += 1;
                    (s.1 - 1, item)
                };
                {
                    let mut next = gate.0.lock().unwrap_or_else(|p| p.into_inner());
                    while seq >= *next + lookahead && !abort.load(Ordering::Relaxed) {
                        next = gate.1.wait(next).unwrap_or_else(|p| p.into_inner());
                    }
                }
                if abort.load(Ordering::Relaxed) {
                    break;
                }
                if tx.send((seq, item.and_then(work))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut result = Ok(());
        'receive: for (seq, r) in rx.iter() {
            pending.insert(seq, r);
            while let Some(r) = pending.remove(&next) {
                next += 1;
                if let Err(e) = r.and_then(&mut sink) {
                    result = Err(e);
                    break 'receive;
                }
                *gate.0.lock().unwrap_or_else(|p| p.into_inner()) = next;
                gate.1.notify_all();
            }
        }
        abort.store(true, Ordering::Relaxed);
        // Take the lock so no worker misses the wake-up between its check and its wait.
        drop(gate.0.lock().unwrap_or_else(|p| p.into_inner()));
        gate.1.notify_all();
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_whatever_the_timing() {
        for threads in [1, 2, 7] {
            let mut got = Vec::new();
            let src = (0..200u64).map(Ok::<_, String>);
            ordered_map(
                src,
                threads,
                5,
                |x| {
                    // Later items finish first.
                    std::thread::sleep(std::time::Duration::from_micros((200 - x) * 20 % 700));
                    Ok(x * 2)
                },
                |y| {
                    got.push(y);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(got, (0..200).map(|x| x * 2).collect::<Vec<_>>(), "threads {threads}");
        }
    }

    #[test]
    fn first_error_in_source_order_wins_and_nothing_after_it_is_sunk() {
        let mut got = Vec::new();
        let src = (0..100u64).map(|x| if x == 60 { Err(format!("source {x}")) } else { Ok(x) });
        let err = ordered_map(
            src,
            3,
            4,
            |x| if x == 40 || x == 70 { Err(format!("work {x}")) } else { Ok(x) },
            |y| {
                got.push(y);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err, "work 40");
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        let err = ordered_map((0..10u64).map(Ok), 2, 2, Ok, |y| if y == 3 { Err(y) } else { Ok(()) }).unwrap_err();
        assert_eq!(err, 3);
    }
}
