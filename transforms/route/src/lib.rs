//! `route`: the router. Assigns every point to one tenant, or to several.
//!
//! Rules are tried in order; a rule matches when all of its conditions hold:
//! - `topic`: a regex the source topic must match (anchor it with `^...$`);
//! - `tag` (with `value`): the point has this tag, with this value if given;
//! - `measurement_prefix`: the measurement starts with this.
//!
//! A matching rule names its tenant with `tenant`; a rule with `tag` and no
//! `tenant` takes the tag's value as the tenant name (`{ tag = "tenant" }` routes
//! `cpu,tenant=ops ...` to `ops`). The first matching rule wins, unless
//! `fan_out = true`: then every matching rule adds its tenant, and the point is
//! copied once per tenant. A point no rule matches goes to `default`, or else is
//! handled as `unrouted` says: `dead-letter` (the default: nothing is lost
//! silently) or `drop`.
//!
//! ```toml
//! [router]
//! component = "route"
//! params = { default = "ops", unrouted = "drop", rules = [
//!     { topic = "^team-a-.*$", tenant = "team-a" },
//!     { tag = "tenant" },
//! ] }
//! ```
#![forbid(unsafe_code)]

use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};
use regex_lite::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteParams {
    #[serde(default)]
    rules: Vec<RuleParams>,
    default: Option<String>,
    #[serde(default)]
    unrouted: Unrouted,
    #[serde(default)]
    fan_out: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleParams {
    topic: Option<String>,
    tag: Option<String>,
    value: Option<String>,
    measurement_prefix: Option<String>,
    tenant: Option<String>,
}

/// What happens to a point no rule matches when there is no default tenant.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Unrouted {
    #[default]
    DeadLetter,
    Drop,
}

struct Rule {
    topic: Option<Regex>,
    tag: Option<String>,
    value: Option<String>,
    measurement_prefix: Option<String>,
    tenant: Option<String>,
}

impl Rule {
    fn from_params(i: usize, p: RuleParams) -> Result<Rule, String> {
        let at = |msg: &str| format!("rules[{i}]: {msg}");
        if p.topic.is_none() && p.tag.is_none() && p.measurement_prefix.is_none() {
            return Err(at(
                "needs at least one of `topic`, `tag`, `measurement_prefix`",
            ));
        }
        if p.value.is_some() && p.tag.is_none() {
            return Err(at("`value` needs `tag`"));
        }
        if p.tenant.is_none() && (p.tag.is_none() || p.value.is_some()) {
            return Err(at(
                "needs `tenant`, or a `tag` without `value` whose value names the tenant",
            ));
        }
        if p.tenant.as_deref() == Some("") {
            return Err(at("`tenant` is empty"));
        }
        let topic = match p.topic {
            Some(t) => {
                Some(Regex::new(&t).map_err(|e| at(&format!("`topic` is not a regex: {e}")))?)
            }
            None => None,
        };
        Ok(Rule {
            topic,
            tag: p.tag,
            value: p.value,
            measurement_prefix: p.measurement_prefix,
            tenant: p.tenant,
        })
    }

    /// The tenant this rule assigns to the point, if it matches.
    fn tenant_for<'p>(&'p self, point: &'p Point<'_>, topic_matches: bool) -> Option<&'p str> {
        if self.topic.is_some() && !topic_matches {
            return None;
        }
        if let Some(prefix) = &self.measurement_prefix {
            if !point.measurement().starts_with(prefix.as_str()) {
                return None;
            }
        }
        let tag_value = match &self.tag {
            Some(key) => Some(point.tag(key)?),
            None => None,
        };
        if let (Some(want), Some(have)) = (&self.value, tag_value) {
            if want != have {
                return None;
            }
        }
        match &self.tenant {
            Some(tenant) => Some(tenant),
            None => tag_value.filter(|v| !v.is_empty()),
        }
    }
}

/// The `route` transform.
pub struct Route {
    rules: Vec<Rule>,
    default: Option<String>,
    unrouted: Unrouted,
    fan_out: bool,
    // Points of a batch mostly share a topic: remember which rules' topic regexes
    // matched the last one instead of running them per point (and skip the topic
    // altogether when no rule has a regex).
    has_topic_rules: bool,
    last_topic: String,
    topic_matches: Vec<bool>,
    // The point's tenants; their strings are reused from point to point, so
    // routing allocates nothing once warm.
    tenants: Tenants,
}

/// A list of tenant names whose buffers outlive `clear`.
#[derive(Default)]
struct Tenants {
    names: Vec<String>,
    len: usize,
}

impl Tenants {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_slice(&self) -> &[String] {
        &self.names[..self.len]
    }

    /// Adds `name` unless it is already there.
    #[inline]
    fn add(&mut self, name: &str) {
        if self.as_slice().iter().any(|t| t == name) {
            return;
        }
        match self.names.get_mut(self.len) {
            Some(buffer) => {
                buffer.clear();
                buffer.push_str(name);
            }
            None => self.names.push(name.to_owned()),
        }
        self.len += 1;
    }
}

impl Transform for Route {
    fn init(params: Params) -> Result<Self, String> {
        let p: RouteParams = params.parse()?;
        let rules = p
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::from_params(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        if p.default.as_deref() == Some("") {
            return Err("`default` is empty".into());
        }
        if rules.is_empty() && p.default.is_none() {
            return Err("no `rules` and no `default`: every point would be unrouted".into());
        }
        let n = rules.len();
        Ok(Route {
            has_topic_rules: rules.iter().any(|r| r.topic.is_some()),
            rules,
            default: p.default,
            unrouted: p.unrouted,
            fan_out: p.fan_out,
            last_topic: String::new(),
            topic_matches: vec![false; n],
            tenants: Tenants::default(),
        })
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if self.has_topic_rules
            && (self.last_topic != point.source_topic() || self.last_topic.is_empty())
        {
            self.last_topic.clear();
            self.last_topic.push_str(point.source_topic());
            for (rule, matches) in self.rules.iter().zip(&mut self.topic_matches) {
                *matches = rule
                    .topic
                    .as_ref()
                    .is_some_and(|r| r.is_match(&self.last_topic));
            }
        }
        self.tenants.clear();
        for (rule, &topic_matches) in self.rules.iter().zip(&self.topic_matches) {
            if let Some(tenant) = rule.tenant_for(point, topic_matches) {
                self.tenants.add(tenant);
                if !self.fan_out {
                    break;
                }
            }
        }
        if self.tenants.as_slice().is_empty() {
            match &self.default {
                Some(default) => self.tenants.add(default),
                None => {
                    return match self.unrouted {
                        Unrouted::DeadLetter => Verdict::dead_letter("no route matched"),
                        Unrouted::Drop => Verdict::drop("no route matched"),
                    }
                }
            }
        }
        for (i, tenant) in self.tenants.as_slice().iter().enumerate() {
            if i > 0 {
                point.split();
            }
            point.set_tenant(tenant);
        }
        Verdict::Keep
    }
}

export!(Route);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{point, run, Output, TestPoint};

    fn route(params: &str, points: &[TestPoint]) -> Output {
        let mut t = Route::init(Params::from_json(params)).unwrap();
        run(&mut t, points)
    }

    fn tenants(out: &Output) -> Vec<(usize, &str)> {
        out.origins
            .iter()
            .zip(&out.kept)
            .map(|(o, p)| (*o, p.tenant.as_str()))
            .collect()
    }

    #[test]
    fn routes_by_topic_tag_and_prefix_first_match_wins() {
        let params = r#"{"rules":[
            {"topic":"^team-a-.*$","tenant":"a"},
            {"tag":"tenant"},
            {"tag":"env","value":"prod","tenant":"prod"},
            {"measurement_prefix":"kafka_","tenant":"kafka"}],
            "default":"ops"}"#;
        let out = route(
            params,
            &[
                point("cpu").field("v", 1.0).topic("team-a-metrics"),
                point("cpu")
                    .tag("tenant", "b")
                    .field("v", 1.0)
                    .topic("team-a-x"),
                point("cpu").tag("tenant", "b").field("v", 1.0),
                point("cpu").tag("env", "prod").field("v", 1.0),
                point("cpu").tag("env", "dev").field("v", 1.0),
                point("kafka_lag").field("v", 1.0),
                point("other").field("v", 1.0).topic("team-b"),
            ],
        );
        assert_eq!(
            tenants(&out),
            vec![
                (0, "a"),
                (1, "a"),
                (2, "b"),
                (3, "prod"),
                (4, "ops"),
                (5, "kafka"),
                (6, "ops")
            ]
        );
    }

    #[test]
    fn fans_out_to_every_matching_tenant_once() {
        let params = r#"{"fan_out":true,"rules":[
            {"measurement_prefix":"cpu","tenant":"a"},
            {"tag":"tenant"},
            {"measurement_prefix":"c","tenant":"a"}]}"#;
        let out = route(params, &[point("cpu").tag("tenant", "b").field("v", 1.0)]);
        assert_eq!(tenants(&out), vec![(0, "a"), (0, "b")]);
        // Both copies are the whole point.
        assert_eq!(out.kept[0].tags, out.kept[1].tags);
    }

    /// Tenant names are kept in reused buffers and a point may share the previous
    /// point's tenant string: neither may leak one point's tenants into the next.
    #[test]
    fn consecutive_points_get_their_own_tenants() {
        let params = r#"{"fan_out":true,"rules":[
            {"tag":"tenant"},
            {"tag":"also"}],"default":"ops"}"#;
        let out = route(
            params,
            &[
                point("m").tag("tenant", "longer-name").field("v", 1.0),
                point("m").tag("tenant", "b").field("v", 1.0),
                point("m")
                    .tag("tenant", "b")
                    .tag("also", "c")
                    .field("v", 1.0),
                point("m").tag("also", "b").field("v", 1.0),
                point("m").field("v", 1.0),
                point("m").field("v", 1.0),
                point("m")
                    .tag("tenant", "ops")
                    .tag("also", "ops")
                    .field("v", 1.0),
            ],
        );
        assert_eq!(
            tenants(&out),
            vec![
                (0, "longer-name"),
                (1, "b"),
                (2, "b"),
                (2, "c"),
                (3, "b"),
                (4, "ops"),
                (5, "ops"),
                (6, "ops"),
            ]
        );
    }

    #[test]
    fn unrouted_points_dead_letter_by_default_or_drop() {
        let p = [
            point("x").field("v", 1.0),
            point("y").tag("tenant", "").field("v", 1.0),
        ];
        let out = route(r#"{"rules":[{"tag":"tenant"}]}"#, &p);
        assert_eq!(
            out.dead_lettered(),
            vec![(0, "no route matched"), (1, "no route matched")]
        );
        let out = route(r#"{"rules":[{"tag":"tenant"}],"unrouted":"drop"}"#, &p);
        assert_eq!(out.dropped().len(), 2);
    }

    #[test]
    fn the_topic_cache_follows_topic_changes() {
        let params = r#"{"rules":[{"topic":"^a$","tenant":"A"}],"default":"D"}"#;
        let out = route(
            params,
            &[
                point("m").field("v", 1.0).topic("a"),
                point("m").field("v", 1.0).topic("b"),
                point("m").field("v", 1.0).topic("a"),
            ],
        );
        assert_eq!(tenants(&out), vec![(0, "A"), (1, "D"), (2, "A")]);
    }

    #[test]
    fn refuses_bad_rules_with_their_index() {
        let cases = [
            (
                r#"{"rules":[{"tenant":"a"}]}"#,
                "rules[0]: needs at least one of",
            ),
            (
                r#"{"rules":[{"tag":"t"},{"topic":"x","value":"x","tenant":"a"}]}"#,
                "rules[1]: `value` needs `tag`",
            ),
            (
                r#"{"rules":[{"tag":"t","value":"x"}]}"#,
                "rules[0]: needs `tenant`",
            ),
            (
                r#"{"rules":[{"topic":"(","tenant":"a"}]}"#,
                "rules[0]: `topic` is not a regex",
            ),
            (r#"{}"#, "no `rules` and no `default`"),
            (
                r#"{"default":"a","unrouted":"lose"}"#,
                "unknown variant `lose`",
            ),
            (r#"{"default":"a","rule":[]}"#, "unknown field `rule`"),
        ];
        for (params, want) in cases {
            let err = Route::init(Params::from_json(params)).err().unwrap();
            assert!(err.contains(want), "{params}: {err}");
        }
    }
}
