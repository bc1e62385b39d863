//! Arbitrary Docker containers through `labels::server_config` (labels → server configuration).
//!
//! Input: UTF-8 text (other bytes are replaced), one item per line. The first line is the container name;
//! `@net NAME IP` / `@net NAME` attach a network with or without an IP; `@port PRIVATE PUBLIC [IP] [udp]`
//! publishes a port; `@network NAME` sets the preferred network; every other line is a label `KEY=VALUE`
//! (prefix `nethergate`, so `nethergate.port=25565`).
//!
//! Checks: never panics; `Ok(None)` exactly when `nethergate.enable` is absent or "false" (or "0"); every problem
//! names the container as its source, a `nethergate.` label key and a reason; an accepted server is named
//! after the container or its `name` label, has at least one domain routed to it by a table of its own and
//! one backend address with a non-zero port, and reports the container as its source.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nethergate_core::labels::{server_config, Container, LabelRules, PublishedPort};
use nethergate_core::RouteTable;
use std::net::IpAddr;

const PREFIX: &str = "nethergate";

fn container(text: &str) -> (Container, Option<String>) {
    let mut lines = text.lines();
    let mut c = Container {
        id: "0123456789ab".into(),
        name: lines.next().unwrap_or("").to_owned(),
        ..Container::default()
    };
    let mut preferred = None;
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
            _ => {
                if let Some((k, v)) = line.split_once('=') {
                    c.labels.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }
    (c, preferred)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (c, preferred) = container(&text);
    let rules = LabelRules {
        prefix: PREFIX,
        network: preferred.as_deref(),
    };
    let enable = c
        .labels
        .get(&format!("{PREFIX}.enable"))
        .map(|v| v.trim().to_ascii_lowercase());
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
            let name_label = c.labels.get(&format!("{PREFIX}.name"));
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
                assert!(issue.key.starts_with("nethergate."), "{issue:?}");
                assert!(!issue.reason.is_empty(), "{issue:?}");
            }
            let _ = e.to_string();
        }
    }
});
