//! The routing path (handshake parse, hostname split and normalise, route lookup) allocates nothing.
//!
//! A counting global allocator counts allocations made by the current thread while counting is on, so
//! tests running in parallel on other threads do not disturb the count.

use nethergate_bench::fixtures;
use nethergate_core::handshake;
use nethergate_core::hostname::{Host, ServerAddress};
use nethergate_core::Parsed;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the thread-locals may already be gone while a thread exits.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    black_box(f());
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn counter_sees_an_allocation() {
    assert_eq!(allocations(|| black_box(Vec::<u8>::with_capacity(32))), 1);
    assert_eq!(allocations(|| black_box(1 + 1)), 0);
}

#[test]
fn parse_normalise_route_allocate_nothing() {
    let table = fixtures::route_table();
    for (label, address, expected) in fixtures::CASES {
        let frame = fixtures::handshake_frame(address);
        let mut routed = None;
        let n = allocations(|| {
            // The four steps spelled out, as the session runs them.
            let Ok(Parsed::Complete(hs, _)) = handshake::parse(black_box(&frame)) else {
                return;
            };
            let split = ServerAddress::split(hs.server_address);
            let Some(host) = Host::normalise(split.host) else {
                return;
            };
            routed = table.route(host.as_str()).map(|s| s.name().len());
        });
        assert_eq!(n, 0, "{label}: {n} allocation(s)");
        assert_eq!(routed, expected.map(str::len), "{label}: routed elsewhere");
        // The shared helper the benchmark times is the same path.
        assert_eq!(
            allocations(|| fixtures::route_connection(&table, &frame).is_some()),
            0,
            "{label}"
        );
    }
}

#[test]
fn an_ipv6_address_host_allocates_nothing_either() {
    // Normalising an IPv6 address to its one spelling writes it on the stack.
    let config = nethergate_core::ServerConfig::from_toml(
        "servers/v6.toml",
        "v6",
        "domains = [\"2001:db8::5\"]\naddresses = [\"127.0.0.1:30000\"]\n",
    )
    .expect("the server file is valid");
    let table = nethergate_core::RouteTable::build(&[config]).expect("one server routes");
    for sent in ["2001:db8::5", "[2001:DB8:0:0:0:0:0:5]\0FML3\0"] {
        let frame = fixtures::handshake_frame(sent);
        let mut routed = false;
        let n = allocations(|| routed = fixtures::route_connection(&table, &frame).is_some());
        assert_eq!(n, 0, "{sent:?}: {n} allocation(s)");
        assert!(routed, "{sent:?} routed");
    }
}

/// A login from its first byte to `Forward` allocates three times: the session's copy of what the client
/// sent (which becomes the bytes sent to the backend), and the registry entry with the player's name in
/// it; a fourth when the host had to be normalised (among the cases: upper case and a trailing dot), for
/// the copy the pre-connect event shows. The server's name and address, the event, the queue of actions
/// and the opening sent to the backend are shared, lent or kept in place.
#[test]
fn a_session_allocates_three_times_up_to_forward() {
    let ctx = fixtures::context(std::sync::Arc::new(fixtures::route_table()));
    for (label, address, expected) in fixtures::CASES {
        if expected.is_none() {
            continue;
        }
        // A host that normalising changed is copied for the event.
        let copied = Host::normalise(ServerAddress::split(address).host)
            .is_some_and(|h| h.as_sent().is_none());
        let most = if copied { 4 } else { 3 };
        let bytes = fixtures::login_bytes(address);
        // The first session of a server also sets up its player count in the registry.
        assert!(
            fixtures::session_to_forward(&ctx, &bytes).is_some(),
            "{label}"
        );
        let mut forwarded = None;
        let n = allocations(|| forwarded = fixtures::session_to_forward(&ctx, &bytes));
        assert_eq!(forwarded, Some(bytes.len()), "{label}: not forwarded whole");
        assert!(
            n <= most,
            "{label}: {n} allocations from first byte to Forward (at most {most})"
        );
    }
}
