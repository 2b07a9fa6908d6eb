//! `loadBalancer.localityLbSetting`, checked as Istio checks it: one of
//! `distribute` and `failover`; each `distribute` rule's weights in 1–100
//! and summing to 100; localities `region[/zone[/subzone]]` with at most
//! one `*`, at the end; `failover` between two different plain regions;
//! no topology label in `failoverPriority` beside `failover`; and a
//! warning when failover is asked for without outlier detection, as
//! nothing would ever fail over.

use super::Report;
use crate::networking::traffic::LocalityLb;
use crate::networking::TrafficPolicy;

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

pub(super) fn check(r: &mut Report, at: &str, tp: &TrafficPolicy) {
    let Some(l) = tp
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
    else {
        return;
    };
    let at = format!("{at}.loadBalancer.localityLbSetting");
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        r.error(
            &at,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !l.failover.is_empty() {
        if let Some(label) = l
            .failover_priority
            .iter()
            .find(|p| TOPOLOGY_LABELS.contains(&p.as_str()))
        {
            r.error(
                format!("{at}.failoverPriority"),
                format!("can not simultaneously set 'failover' and topology label {label:?} in 'failoverPriority'"),
            );
        }
    }
    distribute(r, &at, l);
    for (i, f) in l.failover.iter().enumerate() {
        let at = format!("{at}.failover[{i}]");
        if f.from == f.to {
            r.error(
                &at,
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            r.error(&at, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            r.error(
                &at,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
    let wants_failover = !l.failover.is_empty() || !l.failover_priority.is_empty();
    if wants_failover && tp.outlier_detection.is_none() {
        r.warn(
            &at,
            "outlier detection policy must be provided for failover: without it no endpoint is ever taken out, so traffic never fails over",
        );
    }
}

fn distribute(r: &mut Report, at: &str, l: &LocalityLb) {
    for (i, rule) in l.distribute.iter().enumerate() {
        let at = format!("{at}.distribute[{i}]");
        if let Err(e) = locality(&rule.from) {
            r.error(format!("{at}.from"), e);
        }
        for (to, weight) in &rule.to {
            if !(1..=100).contains(weight) {
                r.error(
                    format!("{at}.to"),
                    format!("weight {weight} of {to:?}: locality weight must be in range [1, 100]"),
                );
            }
            if let Err(e) = locality(to) {
                r.error(format!("{at}.to"), e);
            }
        }
        let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            r.error(
                format!("{at}.to"),
                format!("total locality weight {total} != 100"),
            );
        }
    }
}

/// `region[/zone[/subzone]]`, a `*` only as the whole last part.
fn locality(l: &str) -> Result<(), String> {
    let stars = l.matches('*').count();
    if stars > 1 || (stars == 1 && !l.ends_with('*')) {
        return Err(format!(
            "locality {l:?}: wildcard '*' number can not exceed 1 and must be in the end"
        ));
    }
    let parts: Vec<&str> = l.split('/').collect();
    if l.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "locality {l:?} is invalid: write region, region/zone or region/zone/subzone"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn problems(setting: &str) -> Vec<String> {
        let yaml = format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: r\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n{setting}");
        crate::load_str(&yaml, "dr.yaml")
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn istios_locality_rules() {
        let ok = problems("        distribute:\n        - from: us-west/zone1/*\n          to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 20}\n");
        assert!(ok.is_empty(), "{ok:?}");
        let sum = problems(
            "        distribute:\n        - from: us-west/*\n          to: {\"us-west/*\": 80}\n",
        );
        assert!(
            sum.iter()
                .any(|p| p.contains("total locality weight 80 != 100")),
            "{sum:?}"
        );
        let star = problems(
            "        distribute:\n        - from: \"*/zone1\"\n          to: {\"us-west\": 100}\n",
        );
        assert!(
            star.iter().any(|p| p.contains("must be in the end")),
            "{star:?}"
        );
        let both = problems("        distribute:\n        - from: a\n          to: {b: 100}\n        failover: [{from: a, to: b}]\n");
        assert!(
            both.iter().any(|p| p.contains("simultaneously")),
            "{both:?}"
        );
        let same = problems("        failover: [{from: a, to: a}]\n");
        assert!(
            same.iter().any(|p| p.contains("different regions")),
            "{same:?}"
        );
        assert!(
            same.iter().any(|p| p.contains("outlier detection")),
            "failover without outlier detection warns: {same:?}"
        );
        let topo = problems("        failover: [{from: a, to: b}]\n        failoverPriority: [topology.kubernetes.io/zone]\n");
        assert!(
            topo.iter().any(|p| p.contains("topology label")),
            "{topo:?}"
        );
    }
}
