use super::*;
use crate::limits::{Limits, Rate, TokenBudget, Window};

fn block() -> Box<LimitsBlock> {
    // SAFETY: all-zero bytes are a valid LimitsBlock (atomics and integers of 0).
    unsafe { Box::new(std::mem::zeroed()) }
}

fn handle(b: &LimitsBlock) -> KeyLimits {
    KeyLimits::new(NonNull::from(b))
}

fn rpm(per_minute: u32, burst: u32) -> Limits {
    Limits {
        rate: Some(Rate { per_minute, burst }),
        ..Limits::default()
    }
}

fn tokens(list: &[(u64, &str)]) -> Limits {
    Limits {
        tokens: list
            .iter()
            .map(|&(budget, per)| TokenBudget {
                budget,
                window: Window::parse(per).unwrap(),
            })
            .collect(),
        ..Limits::default()
    }
}

const T0: u64 = 1_796_000_000_000; // ms

#[test]
fn rate_admits_the_burst_then_one_per_interval() {
    let b = block();
    let k = handle(&b);
    let l = rpm(60, 3);
    for _ in 0..3 {
        assert!(k.admit(&l, T0).is_ok());
    }
    let r = k.admit(&l, T0).err().unwrap();
    assert_eq!(r.kind, LimitKind::Rpm);
    assert_eq!(r.retry_after_s, 1);
    assert!(r.should_retry());
    assert!(k.admit(&l, T0 + 999).is_err());
    assert!(k.admit(&l, T0 + 1000).is_ok());
    assert!(k.admit(&l, T0 + 1000).is_err());
    assert_eq!(k.limited(), [3, 0, 0]);
    // A slow rate: the retry is the real wait, rounded up.
    let b2 = block();
    let k2 = handle(&b2);
    let slow = rpm(1, 1);
    assert!(k2.admit(&slow, T0).is_ok());
    assert_eq!(k2.admit(&slow, T0 + 500).err().unwrap().retry_after_s, 60);
}

/// In any span of t seconds, at most burst + floor(t × rpm / 60) requests pass: checked by
/// offering a request every 7 ms for 5 s and counting over every span.
#[test]
fn rate_bound_holds_over_every_span() {
    let b = block();
    let k = handle(&b);
    let (per_minute, burst) = (600, 4);
    let l = rpm(per_minute, burst);
    let admitted: Vec<u64> = (0..700)
        .map(|i| T0 + i * 7)
        .filter(|&t| k.admit(&l, t).is_ok())
        .collect();
    assert!(admitted.len() > 40);
    for (i, &a) in admitted.iter().enumerate() {
        for (j, &z) in admitted.iter().enumerate().skip(i) {
            let span_ms = z - a;
            let allowed = u64::from(burst) + span_ms * u64::from(per_minute) / 60_000;
            assert!(
                (j - i + 1) as u64 <= allowed,
                "{} in {span_ms} ms",
                j - i + 1
            );
        }
    }
}

#[test]
fn concurrency_is_exact_and_released_once() {
    let b = block();
    let k = handle(&b);
    let l = Limits {
        concurrent: Some(2),
        ..Limits::default()
    };
    let a = k.admit(&l, T0).unwrap().slot.unwrap();
    let c = k.admit(&l, T0).unwrap().slot.unwrap();
    let r = k.admit(&l, T0).err().unwrap();
    assert_eq!((r.kind, r.retry_after_s), (LimitKind::Concurrency, 1));
    assert_eq!(k.in_flight(), 2);
    a.release();
    assert_eq!(k.in_flight(), 1);
    let d = k.admit(&l, T0).unwrap().slot.unwrap();
    c.release();
    d.release();
    assert_eq!(k.in_flight(), 0);
}

#[test]
fn concurrency_across_threads_never_exceeds_the_limit() {
    let b = block();
    let k = handle(&b);
    let l = Limits {
        concurrent: Some(3),
        ..Limits::default()
    };
    let max_seen = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    if let Ok(Admission { slot: Some(h) }) = k.admit(&l, T0) {
                        max_seen.fetch_max(k.in_flight(), Relaxed);
                        h.release();
                    }
                }
            });
        }
    });
    assert!(max_seen.load(Relaxed) <= 3);
    assert_eq!(k.in_flight(), 0);
}

#[test]
fn a_rate_refusal_gives_the_slot_back() {
    let b = block();
    let k = handle(&b);
    let l = Limits {
        concurrent: Some(5),
        ..rpm(60, 1)
    };
    let _held = k.admit(&l, T0).unwrap().slot.unwrap();
    assert_eq!(k.admit(&l, T0).err().unwrap().kind, LimitKind::Rpm);
    assert_eq!(k.in_flight(), 1);
}

#[test]
fn budgets_charge_refuse_and_roll_over() {
    let b = block();
    let k = handle(&b);
    let l = tokens(&[(100, "10s"), (1000, "1h")]);
    let s0 = T0 / 1000; // a multiple of 10 s
    assert!(k.admit(&l, T0).is_ok());
    k.charge(&l, 99, s0);
    assert!(k.admit(&l, T0 + 1).is_ok(), "under budget is admitted");
    k.charge(&l, 5, s0 + 1); // the overshoot of an admitted request
    let r = k.admit(&l, T0 + 2_500).err().unwrap();
    assert_eq!(r.kind, LimitKind::Tokens);
    assert_eq!(r.retry_after_s, 8); // 7.5 s to the window's end, rounded up
    assert_eq!(r.limit, 100);
    let v = k.view(&l, T0 + 2_500);
    assert_eq!(v.tokens[0].used, 104);
    assert_eq!(v.tokens[1].used, 104);
    assert_eq!(v.tokens[0].end_s, s0 + 10);
    // The next 10 s window starts empty; the hour keeps counting.
    assert!(k.admit(&l, T0 + 10_000).is_ok());
    k.charge(&l, 900, s0 + 10);
    let r = k.admit(&l, T0 + 10_001).err().unwrap();
    assert_eq!(r.limit, 1000, "the hour is spent and it resets last");
    assert!(!r.should_retry());
    assert_eq!(k.limited(), [0, 0, 2]);
}

#[test]
fn usage_follows_the_window_length_across_limit_changes() {
    let b = block();
    let k = handle(&b);
    let s0 = T0 / 1000;
    k.charge(&tokens(&[(50, "1d"), (60, "1h")]), 10, s0);
    // A reload reorders the budgets and drops the hour for a minute window.
    let l2 = tokens(&[(60, "1m"), (50, "1d")]);
    k.charge(&l2, 5, s0);
    let v = k.view(&l2, T0);
    assert_eq!((v.tokens[0].used, v.tokens[1].used), (5, 15));
    assert_eq!(k.windows_in_use(s0).len(), 2);
}

#[test]
fn saturates_at_the_field() {
    let b = block();
    let k = handle(&b);
    let l = tokens(&[(MAX_BUDGET, "1d")]);
    k.charge(&l, u64::MAX, T0 / 1000);
    k.charge(&l, u64::MAX, T0 / 1000);
    assert_eq!(k.view(&l, T0).tokens[0].used, MAX_BUDGET);
    assert!(k.admit(&l, T0).is_err());
}

#[test]
fn state_round_trip_keeps_only_current_windows() {
    let b = block();
    let k = handle(&b);
    let l = tokens(&[(500, "1d"), (500, "10s")]);
    let s0 = T0 / 1000;
    k.charge(&l, 42, s0);
    let saved = k.windows_in_use(s0 + 3);
    assert_eq!(saved.len(), 2);
    let b2 = block();
    let k2 = handle(&b2);
    // 11 s later the 10 s window has ended: only the day comes back.
    let restored = saved.iter().filter(|u| k2.restore(u, s0 + 11)).count();
    assert_eq!(restored, 1);
    assert_eq!(k2.view(&l, (s0 + 11) * 1000).tokens[0].used, 42);
    assert_eq!(k2.view(&l, (s0 + 11) * 1000).tokens[1].used, 0);
}

#[test]
fn view_of_the_rate() {
    let b = block();
    let k = handle(&b);
    let l = rpm(60, 3);
    assert_eq!(k.view(&l, T0).rate.unwrap().remaining, 3);
    assert!(k.admit(&l, T0).is_ok());
    assert!(k.admit(&l, T0).is_ok());
    let v = k.view(&l, T0).rate.unwrap();
    assert_eq!(v.remaining, 1);
    assert_eq!(v.full_at_s, T0 / 1000 + 2);
    assert!(k.should_log(5));
    assert!(!k.should_log(5));
    assert!(k.should_log(6));
}

#[test]
fn a_fleet_counted_rate_is_left_out_here_and_counted_in_a_fallback() {
    let b = block();
    let k = handle(&b);
    let l = Limits {
        concurrent: Some(1),
        ..rpm(60, 1)
    };
    // The fleet counts the rate: any number of admissions as far as this host goes, but the
    // slot is still this host's.
    let held = k.admit_except_rate(&l, T0).expect("no rate here");
    assert_eq!(
        k.admit_except_rate(&l, T0).err().unwrap().kind,
        LimitKind::Concurrency
    );
    held.slot.expect("a slot").release();
    for _ in 0..5 {
        let a = k.admit_except_rate(&l, T0).expect("no rate here");
        a.slot.expect("a slot").release();
    }
    // Redis gave no answer: the local rate decides, and refuses once spent.
    let rate = l.rate.unwrap();
    assert!(k.admit_rate(rate, T0).is_ok());
    assert_eq!(k.admit_rate(rate, T0).err().unwrap().kind, LimitKind::Rpm);
    // A refusal decided by the fleet is counted with the local ones.
    k.count_refusal(LimitKind::Rpm);
    assert_eq!(k.limited(), [2, 1, 0]);
}
