//! The route table: which server a normalised host goes to.
//!
//! Exact names beat every wildcard; among wildcard patterns (`*` for any run of characters, `?` for one)
//! the one with the longest literal suffix wins, then the one with more literal characters, then the
//! lexically smaller pattern, so the result never depends on file order. Lookups allocate nothing.
//!
//! The common wildcard shape, `*.suffix` (and a lone `*`), is indexed by its literal suffix: a lookup
//! hashes the host's suffixes that start at a dot, longest first, so its cost grows with the number of
//! labels in the host and not with the number of servers. Other globs (`mc?.example.com`, `*mc*`) are
//! tried in precedence order, and only those that would beat the indexed match.

use crate::config::{BackendAddress, ConfigErrors, ConfigIssue, ServerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A server in the route table, with its round-robin position.
#[derive(Debug)]
pub struct Server {
    /// Its validated configuration.
    pub config: ServerConfig,
    next_address: AtomicUsize,
    login_disconnect: bytes::Bytes,
    /// The name and addresses again, shared: what a connection keeps of them (a dial request, its
    /// registry entry) is a reference count, not a copy of the string.
    name: Arc<str>,
    addresses: Box<[Arc<BackendAddress>]>,
}

impl Server {
    /// Wraps a configuration (its name and addresses are read once, here).
    pub fn new(config: ServerConfig) -> Self {
        Server {
            login_disconnect: crate::response::login_disconnect(&config.disconnect_message).into(),
            name: config.name.as_str().into(),
            addresses: config.addresses.iter().cloned().map(Arc::new).collect(),
            config,
            next_address: AtomicUsize::new(0),
        }
    }

    /// A Login Disconnect packet with `disconnect_message`, built once per server.
    pub fn login_disconnect(&self) -> bytes::Bytes {
        self.login_disconnect.clone()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// Address `i` of `addresses`, counted round (`None` when there are none), shared.
    pub fn address(&self, i: usize) -> Option<Arc<BackendAddress>> {
        let n = self.addresses.len();
        (n > 0).then(|| Arc::clone(&self.addresses[i % n]))
    }

    /// How many addresses it has (what [`Server::address`] counts round).
    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }

    /// The index of the address a new connection should try first (round robin).
    pub fn first_address(&self) -> usize {
        let n = self.addresses.len().max(1);
        self.next_address.fetch_add(1, Ordering::Relaxed) % n
    }
}

#[derive(Debug)]
struct Wildcard {
    pattern: String,
    literal_suffix: usize,
    literals: usize,
    server: usize,
}

/// String-keyed maps on the lookup path. The keys come from the configuration and are never inserted
/// from the network, so a fast non-cryptographic hasher (randomly seeded per map) is safe here.
type FastMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

fn fast_map<V>() -> FastMap<V> {
    HashMap::with_hasher(foldhash::fast::RandomState::default())
}

/// Maps hosts to servers. Built once per configuration load and shared read-only.
#[derive(Debug)]
pub struct RouteTable {
    servers: Vec<Arc<Server>>,
    exact: FastMap<usize>,
    /// Every wildcard pattern, best first (see the module docs).
    wildcards: Vec<Wildcard>,
    /// `*.suffix` and `*` patterns by their literal suffix (`.suffix`, or empty): index into `wildcards`.
    suffixes: FastMap<usize>,
    /// The other patterns: indices into `wildcards`, ascending (best first).
    globs: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            servers: Vec::new(),
            exact: fast_map(),
            wildcards: Vec::new(),
            suffixes: fast_map(),
            globs: Vec::new(),
            by_name: HashMap::new(),
        }
    }
}

/// Whether a configured domain is a pattern (`*`, `?`) rather than an exact name.
pub(crate) fn is_wildcard(domain: &str) -> bool {
    domain.contains(['*', '?'])
}

/// The literal suffix of a pattern that a suffix lookup can match: `*.suffix` gives `.suffix`, `*` gives
/// the empty string; any other pattern gives `None`.
fn indexable_suffix(pattern: &str) -> Option<&str> {
    let rest = pattern.strip_prefix('*')?;
    (!is_wildcard(rest) && (rest.is_empty() || rest.starts_with('.'))).then_some(rest)
}

/// Matches `text` against a glob `pattern` of `*` and `?`, in linear space, without allocating.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` is a wildcard even where the text holds a `*` too (only a hostile host does).
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl RouteTable {
    /// Builds the table; reports every domain claimed twice (naming both sources) and duplicate names.
    pub fn build(configs: &[ServerConfig]) -> Result<RouteTable, ConfigErrors> {
        let mut table = RouteTable::default();
        let mut issues = Vec::new();
        let mut claimed: HashMap<&str, usize> = HashMap::new();
        for (index, config) in configs.iter().enumerate() {
            if let Some(&other) = table.by_name.get(&config.name) {
                issues.push(ConfigIssue {
                    source: config.source.clone(),
                    key: format!("{}name", config.key_prefix),
                    reason: format!(
                        "server name {:?} is already used by {}",
                        config.name, configs[other].source
                    ),
                });
                // Its domains are still checked: every problem is reported at once.
            } else {
                table.by_name.insert(config.name.clone(), index);
            }
            for domain in &config.domains {
                match claimed.get(domain.as_str()) {
                    Some(&other) if other == index => continue,
                    Some(&other) => {
                        issues.push(ConfigIssue {
                            source: config.source.clone(),
                            key: format!("{}domains", config.key_prefix),
                            reason: format!(
                                "domain {domain:?} is claimed by both {} (server {:?}) and {} (server {:?})",
                                configs[other].source, configs[other].name, config.source, config.name
                            ),
                        });
                        continue;
                    }
                    None => {
                        claimed.insert(domain, index);
                    }
                }
                if is_wildcard(domain) {
                    let last_wild = domain.rfind(['*', '?']).map_or(0, |i| i + 1);
                    table.wildcards.push(Wildcard {
                        pattern: domain.clone(),
                        literal_suffix: domain.len() - last_wild,
                        literals: domain.chars().filter(|&c| c != '*' && c != '?').count(),
                        server: index,
                    });
                } else {
                    table.exact.insert(domain.clone(), index);
                }
            }
            table.servers.push(Arc::new(Server::new(config.clone())));
        }
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        table.wildcards.sort_by(|a, b| {
            b.literal_suffix
                .cmp(&a.literal_suffix)
                .then(b.literals.cmp(&a.literals))
                .then(a.pattern.cmp(&b.pattern))
        });
        for (rank, wildcard) in table.wildcards.iter().enumerate() {
            match indexable_suffix(&wildcard.pattern) {
                Some(suffix) => {
                    table.suffixes.insert(suffix.to_owned(), rank);
                }
                None => table.globs.push(rank),
            }
        }
        Ok(table)
    }

    /// The server for a normalised host (see [`crate::hostname::Host`]).
    pub fn route(&self, host: &str) -> Option<&Arc<Server>> {
        let index = match self.exact.get(host) {
            Some(&i) => i,
            None => self.wildcards.get(self.wildcard_rank(host)?)?.server,
        };
        self.servers.get(index)
    }

    /// The rank (index into `wildcards`) of the best wildcard matching `host`.
    fn wildcard_rank(&self, host: &str) -> Option<usize> {
        // The longest indexed suffix that matches is the best indexed pattern: a longer literal suffix
        // ranks first, and two indexed patterns never share a suffix length for one host.
        let indexed = if self.suffixes.is_empty() {
            None
        } else {
            host.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'.')
                .map(|(i, _)| &host[i..])
                .chain(std::iter::once(""))
                .find_map(|suffix| self.suffixes.get(suffix).copied())
        };
        let best = indexed.unwrap_or(usize::MAX);
        self.globs
            .iter()
            .take_while(|&&rank| rank < best)
            .find(|&&rank| {
                self.wildcards
                    .get(rank)
                    .is_some_and(|w| glob_match(&w.pattern, host))
            })
            .copied()
            .or(indexed)
    }

    /// The server with this name (for redirects).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Server>> {
        self.by_name.get(name).and_then(|&i| self.servers.get(i))
    }

    /// Every server, in configuration order.
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(name: &str, domains: &[&str]) -> ServerConfig {
        ServerConfig::from_toml(
            &format!("servers/{name}.toml"),
            name,
            &format!(
                "domains = [{}]\naddresses = [\"127.0.0.1:1\"]",
                domains
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .unwrap()
    }

    fn routed<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.route(host).map(|s| s.name())
    }

    #[test]
    fn wildcard_loses_to_exact_domain() {
        let t = RouteTable::build(&[
            cfg("wild", &["*.example.com"]),
            cfg("exact", &["mc.example.com"]),
        ])
        .unwrap();
        assert_eq!(routed(&t, "mc.example.com"), Some("exact"));
        assert_eq!(routed(&t, "other.example.com"), Some("wild"));
        assert_eq!(routed(&t, "example.com"), None);
    }

    #[test]
    fn longer_wildcard_suffix_wins_in_any_file_order() {
        let a = cfg("broad", &["*.example.com"]);
        let b = cfg("narrow", &["*.eu.example.com"]);
        for order in [vec![a.clone(), b.clone()], vec![b, a]] {
            let t = RouteTable::build(&order).unwrap();
            assert_eq!(routed(&t, "x.eu.example.com"), Some("narrow"));
            assert_eq!(routed(&t, "x.us.example.com"), Some("broad"));
        }
    }

    #[test]
    fn better_glob_beats_the_indexed_suffix() {
        let t = RouteTable::build(&[
            cfg("suffix", &["*.example.com"]),
            cfg("glob", &["mc?.example.com", "*play*"]),
            cfg("all", &["*"]),
        ])
        .unwrap();
        assert_eq!(routed(&t, "mc1.example.com"), Some("glob"));
        assert_eq!(routed(&t, "eu.example.com"), Some("suffix"));
        assert_eq!(routed(&t, "play.example.org"), Some("glob"));
        assert_eq!(routed(&t, "other.org"), Some("all"));
    }

    #[test]
    fn question_mark_matches_one_character() {
        let t = RouteTable::build(&[cfg("s", &["mc?.example.com"])]).unwrap();
        assert_eq!(routed(&t, "mc1.example.com"), Some("s"));
        assert_eq!(routed(&t, "mc12.example.com"), None);
    }

    #[test]
    fn unknown_host_has_no_route() {
        let t = RouteTable::build(&[cfg("s", &["a.example.com"])]).unwrap();
        assert_eq!(routed(&t, "b.example.com"), None);
    }

    #[test]
    fn domain_claimed_twice_names_both_files() {
        let e = RouteTable::build(&[
            cfg("one", &["mc.example.com"]),
            cfg("two", &["MC.example.com."]),
        ])
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("servers/one.toml") && text.contains("servers/two.toml"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_server_name_is_an_error() {
        let mut b = cfg("one", &["b.example.com"]);
        b.source = "servers/other.toml".into();
        assert!(RouteTable::build(&[cfg("one", &["a.example.com"]), b]).is_err());
        // A server with a taken name has its domains checked too.
        let mut c = cfg("one", &["a.example.com"]);
        c.source = "servers/third.toml".into();
        let e = RouteTable::build(&[cfg("one", &["a.example.com"]), c]).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, vec!["name", "domains"], "{e}");
        // A server from Docker labels is told by its labels' names.
        let mut c = cfg("one", &["a.example.com"]);
        c.key_prefix = "nethergate.".into();
        let e = RouteTable::build(&[cfg("one", &["a.example.com"]), c]).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, vec!["nethergate.name", "nethergate.domains"], "{e}");
    }

    #[test]
    fn a_star_in_the_host_does_not_stop_a_pattern_star() {
        assert!(glob_match("mc*", "mc*x"));
        assert!(glob_match("a*b", "a*xb"));
        assert!(!glob_match("a*b", "a*x"));
    }

    #[test]
    fn round_robin_cycles_through_addresses() {
        let mut c = cfg("s", &["a"]);
        c.addresses
            .push(crate::config::BackendAddress::parse("127.0.0.1:2").unwrap());
        let s = Server::new(c);
        assert_eq!(
            [s.first_address(), s.first_address(), s.first_address()],
            [0, 1, 0]
        );
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_naive_matcher(p in "[ab*?]{0,8}", t in "[ab*?]{0,10}") {
            fn naive(p: &[u8], t: &[u8]) -> bool {
                match (p.first(), t.first()) {
                    (None, _) => t.is_empty(),
                    (Some(b'*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
                    (Some(_), None) => false,
                    (Some(&c), Some(&d)) => (c == b'?' || c == d) && naive(&p[1..], &t[1..]),
                }
            }
            prop_assert_eq!(glob_match(&p, &t), naive(p.as_bytes(), t.as_bytes()));
        }

        #[test]
        fn suffix_index_agrees_with_a_scan_in_precedence_order(
            patterns in proptest::collection::btree_set("[*?]?[ab.]{0,3}[*?]?[ab.]{0,3}[ab*?]", 1..8),
            host in "[ab.]{1,8}",
        ) {
            // Names and patterns with an empty label ("a..b", "*..a"), and "*." (the catch-all
            // misspelt), are configuration errors.
            let domains: Vec<&str> = patterns
                .iter()
                .map(String::as_str)
                .filter(|&d| {
                    let name = d.strip_suffix('.').unwrap_or(d);
                    !name.split('.').any(str::is_empty) && (name != "*" || d == "*")
                })
                .collect();
            prop_assume!(!domains.is_empty());
            let t = RouteTable::build(&[cfg("s", &domains)]).unwrap();
            let scanned = t.wildcards.iter().position(|w| glob_match(&w.pattern, &host));
            prop_assert_eq!(t.wildcard_rank(&host), scanned);
        }

        #[test]
        fn exact_always_beats_wildcards(label in "[a-z]{1,8}") {
            let host = format!("{label}.example.com");
            let t = RouteTable::build(&[cfg("w1", &["*"]), cfg("w2", &["*.example.com"]), cfg("e", &[&host])]).unwrap();
            prop_assert_eq!(routed(&t, &host), Some("e"));
        }
    }
}
