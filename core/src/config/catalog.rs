//! The servers currently live, by the source they come from.

use super::{ConfigErrors, ConfigIssue, ServerConfig, ServerFiles};

/// The servers currently live, by where they come from: server files, and providers such as Docker.
///
/// Reloading is all or nothing per source: a file that no longer parses keeps its previous version live, a
/// removed file removes its server; a provider's set is replaced whole. [`Catalog::route_table`] then either
/// builds a new table or reports why not (a domain conflict), and the caller keeps the previous table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    files: std::collections::BTreeMap<String, ServerConfig>,
    providers: std::collections::BTreeMap<String, Vec<ServerConfig>>,
}

impl Catalog {
    /// A catalog of already validated servers (as loaded at startup), keyed by their source.
    pub fn new(servers: &[ServerConfig]) -> Catalog {
        Catalog {
            files: servers
                .iter()
                .map(|s| (s.source.clone(), s.clone()))
                .collect(),
            providers: Default::default(),
        }
    }

    /// Applies a fresh read of the server directory and returns the problems of files that failed, each
    /// with whether its file's previous version stays live (`false` for a file that never loaded).
    pub fn update_files(&mut self, fresh: ServerFiles) -> Vec<(ConfigIssue, bool)> {
        let mut issues = Vec::new();
        let mut files = std::collections::BTreeMap::new();
        for (path, result) in fresh.files {
            let source = path.display().to_string();
            match result {
                Ok(server) => {
                    files.insert(source, server);
                }
                Err(errors) => {
                    let kept = match self.files.remove(&source) {
                        Some(previous) => files.insert(source, previous).is_none(),
                        None => false,
                    };
                    issues.extend(errors.0.into_iter().map(|issue| (issue, kept)));
                }
            }
        }
        self.files = files;
        issues
    }

    /// Replaces every server of `provider` (e.g. `"docker"`).
    pub fn set_provider(&mut self, provider: &str, servers: Vec<ServerConfig>) {
        // A provider with no servers is one that never had any: its first, empty list changes nothing.
        if servers.is_empty() {
            self.providers.remove(provider);
        } else {
            self.providers.insert(provider.to_owned(), servers);
        }
    }

    /// Takes `provider`'s servers from `other` (none when it has none there); the other sources' servers
    /// stay as they are.
    pub fn adopt_provider(&mut self, provider: &str, other: &Catalog) {
        let servers = other.providers.get(provider).cloned().unwrap_or_default();
        self.set_provider(provider, servers);
    }

    /// Every server, files first (by path), then providers (by name).
    pub fn servers(&self) -> Vec<ServerConfig> {
        self.all().cloned().collect()
    }

    /// Builds the route table of every server.
    pub fn route_table(&self) -> Result<crate::route::RouteTable, ConfigErrors> {
        crate::route::RouteTable::build(&self.servers())
    }

    /// Builds the route table of every server, as [`Catalog::route_table`]; when it cannot be built, each
    /// conflict is reported against a server that is new or changed since `previous` (the catalog whose
    /// table is live), not against one that was already live unchanged. The reason names both sides.
    pub fn route_table_since(
        &self,
        previous: &Catalog,
    ) -> Result<crate::route::RouteTable, ConfigErrors> {
        let servers = self.servers();
        let built = crate::route::RouteTable::build(&servers);
        if built.is_ok() {
            return built;
        }
        // A conflict is reported against the later of the two servers: put the unchanged ones first.
        let changed = self.new_or_changed(previous);
        let (mut ordered, changed): (Vec<ServerConfig>, Vec<ServerConfig>) =
            servers.into_iter().partition(|s| !changed.contains(&s));
        ordered.extend(changed);
        crate::route::RouteTable::build(&ordered).and(built)
    }

    /// The servers that are new or changed since `previous`: not in it, from the same source, as they are.
    pub fn new_or_changed(&self, previous: &Catalog) -> Vec<&ServerConfig> {
        let before: std::collections::HashMap<&str, Vec<&ServerConfig>> =
            previous
                .all()
                .fold(std::collections::HashMap::new(), |mut by_source, s| {
                    by_source.entry(s.source.as_str()).or_default().push(s);
                    by_source
                });
        self.all()
            .filter(|s| {
                !before
                    .get(s.source.as_str())
                    .is_some_and(|old| old.contains(s))
            })
            .collect()
    }

    /// Every server, in the order of [`Catalog::servers`].
    fn all(&self) -> impl Iterator<Item = &ServerConfig> {
        self.files.values().chain(self.providers.values().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::*;
    use std::path::PathBuf;
    use std::time::Duration;

    /// A server of `source` routing `domain`.
    fn at(source: &str, domain: &str) -> ServerConfig {
        let mut s = server(&format!(
            "domains = [\"{domain}\"]\naddresses = [\"10.0.0.1:25565\"]"
        ))
        .unwrap();
        s.source = source.to_owned();
        s
    }

    #[test]
    fn new_or_changed_servers_are_those_not_live_as_they_are() {
        let live = Catalog::new(&[at("a.toml", "a.example"), at("b.toml", "b.example")]);
        let mut next = live.clone();
        assert!(next.new_or_changed(&live).is_empty());
        next.set_provider("docker", vec![at("container x", "x.example")]);
        let changed = Catalog::new(&[at("a.toml", "a.example"), at("b.toml", "b2.example")]);
        let names = |c: Vec<&ServerConfig>| -> Vec<String> {
            c.iter().map(|s| s.domains.join(",")).collect()
        };
        assert_eq!(names(next.new_or_changed(&live)), ["x.example"]);
        assert_eq!(names(changed.new_or_changed(&live)), ["b2.example"]);
        // A change of a time limit alone is a change.
        let mut slower = at("b.toml", "b.example");
        slower.timeouts.read = Duration::from_secs(3);
        let retimed = Catalog::new(&[at("a.toml", "a.example"), slower]);
        assert_eq!(names(retimed.new_or_changed(&live)), ["b.example"]);
        // A removed server is not new or changed.
        assert!(live.new_or_changed(&next).is_empty());
    }

    #[test]
    fn adopt_provider_takes_that_provider_and_leaves_the_rest() {
        let mut live = Catalog::new(&[at("a.toml", "a.example")]);
        live.set_provider("docker", vec![at("container x", "x.example")]);
        let mut proposal = Catalog::new(&[at("b.toml", "b.example")]);
        proposal.set_provider("docker", vec![at("container y", "y.example")]);
        let domains = |c: &Catalog| -> Vec<String> {
            c.servers().iter().map(|s| s.domains.join(",")).collect()
        };
        let mut docker = live.clone();
        docker.adopt_provider("docker", &proposal);
        assert_eq!(
            domains(&docker),
            ["a.example", "y.example"],
            "the files stay"
        );
        // A provider the proposal does not have is emptied.
        docker.adopt_provider("docker", &Catalog::default());
        assert_eq!(domains(&docker), ["a.example"]);
        assert_eq!(docker, Catalog::new(&[at("a.toml", "a.example")]));
    }

    fn files(entries: &[(&str, &str)]) -> ServerFiles {
        ServerFiles {
            files: entries
                .iter()
                .map(|(name, text)| {
                    let path = PathBuf::from(format!("servers/{name}.toml"));
                    let result = ServerConfig::from_toml(&path.display().to_string(), name, text);
                    (path, result)
                })
                .collect(),
            ..ServerFiles::default()
        }
    }

    #[test]
    fn reload_keeps_a_broken_file_live_and_drops_a_removed_one() {
        let good_a = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let good_b = "domains = [\"b.example.com\"]\naddresses = [\"10.0.0.2:1\"]";
        let mut catalog = Catalog::default();
        assert!(catalog
            .update_files(files(&[("a", good_a), ("b", good_b)]))
            .is_empty());
        assert_eq!(catalog.servers().len(), 2);
        // a breaks, b disappears, c appears.
        let good_c = "domains = [\"c.example.com\"]\naddresses = [\"10.0.0.3:1\"]";
        let issues = catalog.update_files(files(&[
            ("a", "domains = 3"),
            ("c", good_c),
            ("d", "domains = 4"),
        ]));
        let keys: Vec<_> = issues
            .iter()
            .map(|(i, kept)| (i.source.as_str(), i.key.as_str(), *kept))
            .collect();
        // a had a version that stays live; d never loaded.
        assert_eq!(
            keys,
            [
                ("servers/a.toml", "domains", true),
                ("servers/a.toml", "addresses", true),
                ("servers/d.toml", "domains", false),
                ("servers/d.toml", "addresses", false)
            ]
        );
        let names: Vec<String> = catalog.servers().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["a", "c"]);
        let table = catalog.route_table().unwrap();
        assert_eq!(table.route("a.example.com").map(|s| s.name()), Some("a"));
        assert!(table.route("b.example.com").is_none());
    }

    #[test]
    fn provider_servers_join_the_table_and_conflicts_are_reported() {
        let mut catalog = Catalog::default();
        catalog.update_files(files(&[(
            "a",
            "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]",
        )]));
        let docker = ServerConfig::from_toml(
            "docker container web",
            "web",
            "domains = [\"a.example.com\"]\naddresses = [\"172.17.0.2:25565\"]",
        )
        .unwrap();
        catalog.set_provider("docker", vec![docker]);
        let e = catalog.route_table().unwrap_err();
        assert!(e.to_string().contains("docker container web"), "{e}");
        catalog.set_provider("docker", Vec::new());
        assert!(catalog.route_table().is_ok());
        // A provider's empty list is the same catalog as none: nothing to reload.
        let mut with_empty = Catalog::default();
        with_empty.set_provider("docker", Vec::new());
        assert!(with_empty == Catalog::default());
    }
}
