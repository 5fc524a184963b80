//! Model selectors: `sushi.orders`, globs (`sushi.*`, `*_daily`), `tag:NAME`, and `+SEL` /
//! `SEL+` to add everything upstream / downstream.
//!
//! Invariants: matching is case-insensitive (names are lowercase); a selector that matches no
//! model is an error naming the closest names, never silently an empty selection.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Diagnostic, Error, Result, did_you_mean};
use crate::project::ModelName;

/// What selectors are matched against.
pub struct Universe<'a> {
    /// Every model with its tags.
    pub tags: BTreeMap<&'a ModelName, &'a BTreeSet<String>>,
    /// Parents of each model (models only).
    pub parents: BTreeMap<&'a ModelName, BTreeSet<ModelName>>,
}

impl Universe<'_> {
    fn children(&self) -> BTreeMap<&ModelName, BTreeSet<&ModelName>> {
        let mut out: BTreeMap<&ModelName, BTreeSet<&ModelName>> = BTreeMap::new();
        for (child, ps) in &self.parents {
            for p in ps {
                if let Some((k, _)) = self.tags.get_key_value(p) {
                    out.entry(*k).or_default().insert(*child);
                }
            }
        }
        out
    }
}

/// The models matched by any of `selectors`. `flag` names the option, for messages.
pub fn resolve(u: &Universe<'_>, selectors: &[String], flag: &str) -> Result<BTreeSet<ModelName>> {
    let mut out = BTreeSet::new();
    if selectors.is_empty() {
        return Ok(out);
    }
    let mut errors = Vec::new();
    let children = u.children();
    for raw in selectors {
        let sel = raw.trim().to_ascii_lowercase();
        let (up, rest) = match sel.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, sel.as_str()),
        };
        let (down, core) = match rest.strip_suffix('+') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let matched: BTreeSet<&ModelName> = if let Some(tag) = core.strip_prefix("tag:") {
            u.tags
                .iter()
                .filter(|(_, tags)| tags.contains(tag))
                .map(|(n, _)| *n)
                .collect()
        } else {
            u.tags
                .keys()
                .filter(|n| glob(core, n.as_str()))
                .copied()
                .collect()
        };
        if matched.is_empty() {
            let names: Vec<&str> = u.tags.keys().map(|n| n.as_str()).collect();
            let mut d = Diagnostic::error(format!("{flag} `{raw}` matches no model"));
            d = match did_you_mean(core, names.iter().copied()) {
                Some(h) => d.hint(h),
                None => d.hint(
                    "selectors are model names, globs such as `sushi.*`, or `tag:NAME`; add `+` before or after for upstream or downstream",
                ),
            };
            errors.push(d);
            continue;
        }
        let mut stack: Vec<&ModelName> = matched.iter().copied().collect();
        let mut seen: BTreeSet<&ModelName> = matched.clone();
        while let Some(n) = stack.pop() {
            let mut next: Vec<&ModelName> = Vec::new();
            if up && let Some(ps) = u.parents.get(n) {
                next.extend(
                    ps.iter()
                        .filter_map(|p| u.tags.get_key_value(p).map(|(k, _)| *k)),
                );
            }
            if down && let Some(cs) = children.get(n) {
                next.extend(cs.iter().copied());
            }
            for m in next {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        out.extend(seen.into_iter().cloned());
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::User(errors))
    }
}

/// `*` matches any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let names: Vec<ModelName> = ["s.a", "s.b", "s.c", "t.d"]
            .iter()
            .map(|n| ModelName::parse(n).unwrap())
            .collect();
        let hot: BTreeSet<String> = ["hot".to_string()].into();
        let none = BTreeSet::new();
        let tags = names
            .iter()
            .map(|n| (n, if n.as_str() == "s.b" { &hot } else { &none }))
            .collect();
        // a → b → c ; d alone
        let parents = [
            (&names[1], [names[0].clone()].into()),
            (&names[2], [names[1].clone()].into()),
        ]
        .into_iter()
        .collect();
        let u = Universe { tags, parents };
        let r = |s: &[&str]| {
            resolve(
                &u,
                &s.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                "--x",
            )
            .map(|set| {
                set.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        assert_eq!(r(&["s.*"]).unwrap(), "s.a,s.b,s.c");
        assert_eq!(r(&["tag:hot"]).unwrap(), "s.b");
        assert_eq!(r(&["tag:hot+"]).unwrap(), "s.b,s.c");
        assert_eq!(r(&["+S.B"]).unwrap(), "s.a,s.b");
        assert_eq!(r(&["*.d", "s.?"]).unwrap(), "s.a,s.b,s.c,t.d");
        let e = r(&["s.x"]).unwrap_err().to_string();
        assert!(e.contains("matches no model"), "{e}");
    }
}
