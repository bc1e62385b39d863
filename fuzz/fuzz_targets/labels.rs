//! Arbitrary Docker containers through `labels::server_config` (labels → server configuration).
//!
//! Input: UTF-8 text (other bytes are replaced), one item per line. The first line is the container name;
//! `@net NAME IP` / `@net NAME` attach a network with or without an IP; `@port PRIVATE PUBLIC [IP] [udp]`
//! publishes a port; `@network NAME` sets the preferred network; `@mc-router` reads the labels with
//! `label_prefix = "mc-router"` instead of `nethergate`; every other line is a label `KEY=VALUE`
//! (`nethergate.port=25565`, `mc-router.host=a.example.com`).
//!
//! Checks: never panics; `Ok(None)` exactly when `nethergate.enable` is absent or "false" (or "0"), or,
//! for mc-router, when `mc-router.host` is absent; every problem names the container as its source, a
//! label key under the prefix and a reason; an accepted server is named after the container or its `name`
//! label (mc-router: the container), has at least one domain routed to it by a table of its own (mc-router:
//! `*` among them exactly when `mc-router.default` is "true", "1" or "t") and one backend address with a non-zero
//! port, and reports the container as its source.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::labels::{server_config, Container, LabelRules, PublishedPort, MC_ROUTER};
use nethergate_core::RouteTable;
use std::net::IpAddr;

/// A container, its preferred network, and the label prefix.
fn container(text: &str) -> (Container, Option<String>, &'static str) {
    let mut lines = text.lines();
    let mut c = Container {
        id: "0123456789ab".into(),
        name: lines.next().unwrap_or("").to_owned(),
        ..Container::default()
    };
    let mut preferred = None;
    let mut prefix = "nethergate";
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["@net", name, rest @ ..] => {
                let ip = rest.first().and_then(|ip| ip.parse::<IpAddr>().ok());
                c.networks.insert((*name).to_owned(), ip);
            }
            ["@port", private, public, rest @ ..] => {
                if let (Ok(private), Ok(public)) = (private.parse(), public.parse()) {
                    c.ports.push(PublishedPort {
                        private,
                        public,
                        host_ip: rest.first().and_then(|ip| ip.parse().ok()),
                        tcp: !rest.contains(&"udp"),
                    });
                }
            }
            ["@network", name] => preferred = Some((*name).to_owned()),
            ["@mc-router"] => prefix = MC_ROUTER,
            _ => {
                if let Some((k, v)) = line.split_once('=') {
                    c.labels.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }
    (c, preferred, prefix)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (c, preferred, prefix) = container(&text);
    let rules = LabelRules {
        prefix,
        network: preferred.as_deref(),
    };
    let mc_router = prefix == MC_ROUTER;
    let label = |key: &str| {
        c.labels
            .get(&format!("{prefix}.{key}"))
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let enable = match mc_router {
        // mc-router has no enable label: its host label makes a server.
        true => c.labels.get("mc-router.host").map(|_| "true".to_owned()),
        false => label("enable"),
    };
    match server_config(&c, rules) {
        Ok(None) => assert!(
            matches!(enable.as_deref(), None | Some("false" | "0")),
            "ignored with enable = {enable:?}"
        ),
        Ok(Some(s)) => {
            assert!(
                matches!(enable.as_deref(), Some("true" | "1")),
                "enabled with enable = {enable:?}"
            );
            assert_eq!(s.source, c.source());
            if mc_router {
                // Go's `ParseBool` also reads `t`/`T`; hosts are split on commas and line breaks.
                let default = matches!(label("default").as_deref(), Some("true" | "1" | "t"));
                let listed = c
                    .labels
                    .get("mc-router.host")
                    .is_some_and(|h| h.split([',', '\n']).any(|d| d.trim() == "*"));
                let star = s.domains.iter().any(|d| d == "*");
                assert_eq!(star, default || listed, "{:?}", s.domains);
            }
            let name_label = c
                .labels
                .get(&format!("{prefix}.name"))
                .filter(|_| !mc_router);
            // The name label, else the container's name: trimmed, and refused with a control character.
            assert_eq!(s.name, name_label.unwrap_or(&c.name).trim());
            assert!(!s.name.chars().any(char::is_control), "{:?}", s.name);
            assert!(!s.domains.is_empty());
            assert!(!s.addresses.is_empty());
            for a in &s.addresses {
                assert!(a.port != 0 && !a.host.is_empty(), "{a}");
            }
            let table = RouteTable::build(std::slice::from_ref(&s))
                .unwrap_or_else(|e| panic!("an accepted server must build a table: {e}"));
            for d in s.domains.iter().filter(|d| !d.contains(['*', '?'])) {
                assert_eq!(
                    table.route(d).map(|x| x.name()),
                    Some(s.name.as_str()),
                    "{d}"
                );
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "an error without issues");
            for issue in &e.0 {
                assert_eq!(issue.source, c.source());
                // Under mc-router, a problem of the container's own name has no label to name.
                let about_name = mc_router
                    && issue.key.is_empty()
                    && issue.reason.starts_with("the container name: ");
                assert!(
                    issue.key.starts_with(&format!("{prefix}.")) || about_name,
                    "{issue:?}"
                );
                assert!(!issue.reason.is_empty(), "{issue:?}");
            }
            let _ = e.to_string();
        }
    }
});
