#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::time::Instant;

const ORIGIN: Duration = Duration::from_secs(3600);

fn real_monotonic_via_glibc()
-> unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int {
    // SAFETY: `dlsym` with RTLD_NEXT and a NUL-terminated name; the symbol it names
    // is glibc's `clock_gettime`, whose type is the one transmuted to.
    unsafe {
        let p = libc::dlsym(libc::RTLD_NEXT, c"clock_gettime".as_ptr());
        assert!(!p.is_null(), "glibc's clock_gettime not found");
        std::mem::transmute::<*mut libc::c_void, _>(p)
    }
}

#[test]
fn std_instant_reads_virtual_time_on_the_installed_thread_only() {
    let clock = Virtual::install(ORIGIN).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(Instant::now(), t0, "the virtual clock moved on its own");
    clock.set(Duration::from_secs(90));
    assert_eq!(Instant::now() - t0, Duration::from_secs(90));
    assert_eq!(clock.elapsed(), Duration::from_secs(90));
    // Another thread reads the real clock meanwhile.
    let real_moves = std::thread::spawn(|| {
        let a = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        Instant::now() - a
    })
    .join()
    .unwrap();
    assert!(real_moves >= Duration::from_millis(20), "{real_moves:?}");
    assert_eq!(
        Virtual::install(ORIGIN).unwrap_err(),
        InstallError::AlreadyInstalled
    );
    drop(clock);
    // Real again: the real clock is far past one hour and a half of uptime or not,
    // but it moves.
    let a = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    assert!(Instant::now() - a >= Duration::from_millis(5));
}

#[test]
fn the_c_symbol_is_ours_and_the_vdso_is_bypassed() {
    // Rust code calling the C symbol (as std does) lands in the interposer.
    let clock = Virtual::install(ORIGIN).unwrap();
    clock.set(Duration::from_millis(1_500));
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    assert_eq!((ts.tv_sec, ts.tv_nsec), (3601, 500_000_000));
    // CLOCK_REALTIME is never virtual.
    // SAFETY: a valid out-pointer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) },
        0
    );
    assert!(ts.tv_sec > 1_600_000_000, "{}", ts.tv_sec);
    drop(clock);

    // Without a virtual clock the interposer answers by system call; glibc's own
    // function (found behind ours with RTLD_NEXT) answers from the vDSO. Same clock,
    // so the readings agree; the cost differs, which is the vDSO being bypassed.
    let glibc = real_monotonic_via_glibc();
    let read = |f: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { f(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let ours = imp::clock_gettime as unsafe extern "C" fn(_, _) -> _;
    let (a, b, c) = (read(glibc), read(ours), read(glibc));
    assert!(a <= b && b <= c, "{a:?} {b:?} {c:?}");
    let n = 200_000u32;
    let cost = |f| {
        let start = read(glibc);
        for _ in 0..n {
            std::hint::black_box(read(f));
        }
        (read(glibc) - start) / n
    };
    let (via_syscall, via_vdso) = (cost(ours), cost(glibc));
    println!("real clock read: interposer (syscall) {via_syscall:?}, glibc (vDSO) {via_vdso:?}");
}

#[test]
fn a_paused_tokio_runtime_built_under_it_agrees_with_std() {
    let clock = Virtual::install(ORIGIN).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let wall = real_monotonic_via_glibc();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { wall(libc::CLOCK_MONOTONIC, &mut ts) };
    let wall_start = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    rt.block_on(async {
        let origin = tokio::time::Instant::now();
        assert_eq!(origin.into_std(), Instant::now());
        tokio::time::sleep(Duration::from_secs(600)).await;
        let elapsed = origin.elapsed();
        assert_eq!(elapsed, Duration::from_secs(600));
        clock.set(elapsed);
        assert_eq!(tokio::time::Instant::now().into_std(), Instant::now());
    });
    // SAFETY: a valid out-pointer.
    unsafe { wall(libc::CLOCK_MONOTONIC, &mut ts) };
    let wall_spent = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32) - wall_start;
    assert!(wall_spent < Duration::from_secs(5), "{wall_spent:?}");
}

fn failsafe_open_then_half_open(clock: Option<&Virtual>) -> Vec<bool> {
    use failsafe::{Config, StateMachine, backoff, failure_policy};
    let breaker: StateMachine<_, ()> = Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            1,
            backoff::constant(Duration::from_secs(5)),
        ))
        .build();
    breaker.on_error();
    let mut permitted = vec![breaker.is_call_permitted()];
    for ms in [4_000, 5_000, 5_001] {
        if let Some(c) = clock {
            c.set(Duration::from_millis(ms));
        }
        permitted.push(breaker.is_call_permitted());
    }
    permitted
}

#[test]
fn failsafe_half_opens_after_its_wait_in_virtual_time() {
    let clock = Virtual::install(ORIGIN).unwrap();
    // Open at 0; still open at 4 s and at exactly 5 s (failsafe wants `now > until`);
    // half-open at 5.001 s.
    assert_eq!(
        failsafe_open_then_half_open(Some(&clock)),
        [false, false, false, true]
    );
    drop(clock);
    // The same steps on the real clock: the wait never elapses.
    assert_eq!(
        failsafe_open_then_half_open(None),
        [false, false, false, false]
    );
}

fn recloser_open_then_half_open(clock: Option<&Virtual>) -> Vec<&'static str> {
    use recloser::{Error, Recloser};
    let breaker = Recloser::custom()
        .error_rate(0.5)
        .closed_len(2)
        .half_open_len(1)
        .open_wait(Duration::from_secs(5))
        .build();
    let fail = || Err::<(), ()>(());
    // A full ring of two failures opens it at the third call, which still runs.
    let mut seen = Vec::new();
    let mut call = |b: &Recloser| match b.call(fail) {
        Err(Error::Rejected) => seen.push("rejected"),
        Err(Error::Inner(())) => seen.push("ran"),
        Ok(()) => unreachable!(),
    };
    call(&breaker);
    call(&breaker);
    call(&breaker);
    for ms in [4_000, 5_001] {
        if let Some(c) = clock {
            c.set(Duration::from_millis(ms));
        }
        call(&breaker);
    }
    seen
}

#[test]
fn recloser_half_opens_after_its_wait_in_virtual_time() {
    let clock = Virtual::install(ORIGIN).unwrap();
    assert_eq!(
        recloser_open_then_half_open(Some(&clock)),
        ["ran", "ran", "ran", "rejected", "ran"]
    );
    drop(clock);
    assert_eq!(
        recloser_open_then_half_open(None),
        ["ran", "ran", "ran", "rejected", "rejected"]
    );
}
