//! Group text -> batches (pure).
//!
//! Stays one file: the code is about 520 lines; the rest is the table tests
//! of the worked examples of docs/semantics.md, which read best beside it.
//!
//! A group is saved as a type (`list` or `percent`) plus free text. The text is
//! parsed and validated once, when it is saved ([`parse`]), so a malformed group
//! is refused with a message naming the bad piece and never reaches a task.
//! Computing the batches ([`Rule::batches`]) then cannot fail: it only needs the
//! inventories, which may have changed since the group was saved.
//!
//! Choices where the contract is silent:
//! - Whitespace around every piece (node name, batch size, project id, range
//!   item, either side of `~`) is ignored, as it is for list node names; inside
//!   a piece it is an error (`10 %`). Whitespace-only percent text is empty
//!   text (one node per batch).
//! - Percentages are fixed-point, see [`Size::Percent`]: at most 6 decimals
//!   (trailing zeros do not count), so the arithmetic is exact integer math.
//! - Selection form: blank lines are skipped but still counted, so `line N` in
//!   an error is the line the person sees in the editor. An empty SIZES field
//!   means one node per batch, like empty simple text. An empty IDS field means
//!   this project; an empty item inside a non-empty IDS list is an error.
//!   Nodes are selected in the order RANGE lists their positions (`5,2` gives
//!   node 5 before node 2); a position listed again is ignored. A project id
//!   listed again in IDS is dropped when the text is parsed (its nodes would
//!   be candidates once anyway).
//! - Cost: computing batches reads each referenced inventory once and costs
//!   O(nodes of the candidate projects + text), whatever the text repeats;
//!   a group gives at most [`MAX_BATCHES`] batches.

use std::collections::HashSet;
use std::fmt;

/// Fixed-point scale of [`Size::Percent`]: one percent is `PERCENT_SCALE`.
pub const PERCENT_SCALE: u64 = 1_000_000;
/// Decimals a percentage may have; follows from [`PERCENT_SCALE`].
const PERCENT_DECIMALS: usize = 6;
/// Longest node name, in characters (same limit as every name of the API).
pub const MAX_NAME_CHARS: usize = 100;
/// How much of a piece of user text an error message repeats.
const SHOWN_CHARS: usize = 60;
/// Most batches a group (or `_pip_`) may give; more is refused (400), so a
/// short text can not make a task of millions of batches.
pub const MAX_BATCHES: usize = 10_000;

fn too_many_batches() -> String {
    format!("the group gives more than {MAX_BATCHES} batches")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupType {
    List,
    Percent,
}

impl GroupType {
    /// The API spelling (`group_type` field); exact, case-sensitive.
    #[must_use]
    pub fn parse(s: &str) -> Option<GroupType> {
        match s {
            "list" => Some(GroupType::List),
            "percent" => Some(GroupType::Percent),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupType::List => "list",
            GroupType::Percent => "percent",
        }
    }
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated group rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Explicit batches of node names.
    List(Vec<Vec<String>>),
    /// Batch sizes over the whole inventory; empty = one node per batch.
    Simple(Vec<Size>),
    /// One entry per non-blank line of the selection form.
    Selection(Vec<SelectionLine>),
}

/// One batch size spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Take the next N nodes (N >= 1).
    Count(u64),
    /// A percentage in fixed point: P × [`PERCENT_SCALE`], so `25.5%` is
    /// `Percent(25_500_000)`. Integers keep `floor(len × P / 100)` exact where
    /// floating point would lose a node (100 × 0.29 = 28.999…).
    Percent(u64),
}

impl Size {
    /// Nodes one batch of this spec takes out of `len`; always at least 1, even
    /// for a hand-built `Count(0)` or `Percent(0)`, so splitting always ends.
    fn take(self, len: usize) -> usize {
        match self {
            Size::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).max(1),
            Size::Percent(p) => {
                // len < 2^64 and p < 2^64, so the product fits in u128.
                let n = (len as u128) * u128::from(p) / (100 * u128::from(PERCENT_SCALE));
                usize::try_from(n).unwrap_or(usize::MAX).max(1)
            }
        }
    }
}

/// One line `IDS;RANGE;SIZES` of the selection form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectionLine {
    /// Projects whose nodes are the candidates, in order; empty = this project.
    pub projects: Vec<u64>,
    /// Inclusive 1-based position ranges into the candidate list (`N` is `(N, N)`).
    pub ranges: Vec<(u64, u64)>,
    /// Batch sizes over the selected nodes; empty = one node per batch.
    pub sizes: Vec<Size>,
}

/// Parse and validate group text when it is saved.
///
/// # Errors
/// A message for a person that names the offending piece of the text.
pub fn parse(group_type: GroupType, text: &str) -> Result<Rule, String> {
    match group_type {
        GroupType::List => parse_list(text).map(Rule::List),
        GroupType::Percent if text.contains(';') => parse_selection(text).map(Rule::Selection),
        GroupType::Percent => parse_sizes(text).map(Rule::Simple),
    }
}

/// List syntax (also used by the `_pip_` variable): batches separated by `;`
/// or newlines, nodes by `,`; empty pieces skipped; a node only once.
///
/// # Errors
/// No nodes at all, a duplicate node, or a bad node name (too long, control
/// characters); the message names the node.
pub fn parse_list(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut seen = HashSet::new();
    let mut batches = Vec::new();
    for piece in text.split([';', '\n']) {
        let mut batch = Vec::new();
        for name in piece.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_name(name)?;
            if !seen.insert(name) {
                return Err(format!("duplicate node {}", shown(name)));
            }
            batch.push(name.to_owned());
        }
        if !batch.is_empty() {
            if batches.len() == MAX_BATCHES {
                return Err(too_many_batches());
            }
            batches.push(batch);
        }
    }
    if batches.is_empty() {
        return Err("the group has no nodes".to_owned());
    }
    Ok(batches)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "node name {} is longer than {MAX_NAME_CHARS} characters",
            shown(name)
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "node name {} contains a control character",
            shown(name)
        ));
    }
    Ok(())
}

/// Simple-form size list `1:2:10%:%5`; empty (or blank) text = no specs.
fn parse_sizes(text: &str) -> Result<Vec<Size>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(':')
        .map(|piece| {
            let piece = piece.trim();
            if piece.is_empty() {
                return Err(format!("empty batch size in {}", shown(text)));
            }
            parse_size(piece)
                .map_err(|why| format!("bad batch size {} in {}: {why}", shown(piece), shown(text)))
        })
        .collect()
}

/// One size spec: `N`, `P%` or `%P`, with P an integer or decimal.
fn parse_size(piece: &str) -> Result<Size, &'static str> {
    let percent = piece.strip_suffix('%').or_else(|| piece.strip_prefix('%'));
    let Some(body) = percent else {
        if !is_digits(piece) {
            return Err("expected a whole number N >= 1, P% or %P");
        }
        return match piece.parse::<u64>() {
            Ok(0) => Err("a batch size must be at least 1"),
            Ok(n) => Ok(Size::Count(n)),
            Err(_) => Err("number too large"),
        };
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !is_digits(int) || (body.contains('.') && !is_digits(frac)) {
        return Err("expected a percentage like 10%, 25.5% or %10");
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > PERCENT_DECIMALS {
        return Err("a percentage may have at most 6 decimals");
    }
    let int: u64 = int.parse().map_err(|_| "number too large")?;
    // Pad the fraction to exactly PERCENT_DECIMALS digits: "5" -> 500000.
    let frac_scaled: u64 = format!("{frac:0<PERCENT_DECIMALS$}")
        .parse()
        .map_err(|_| "number too large")?;
    let scaled = int
        .checked_mul(PERCENT_SCALE)
        .and_then(|v| v.checked_add(frac_scaled))
        .ok_or("number too large")?;
    if scaled == 0 {
        return Err("a percentage must be greater than 0");
    }
    Ok(Size::Percent(scaled))
}

/// Non-empty and ASCII digits only (`str::parse` would also accept a `+`).
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_selection(text: &str) -> Result<Vec<SelectionLine>, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = parse_selection_line(line).map_err(|why| format!("line {}: {why}", i + 1))?;
        lines.push(parsed);
    }
    // Unreachable for text containing ';', kept so the rule is never empty.
    if lines.is_empty() {
        return Err("the group has no rules".to_owned());
    }
    Ok(lines)
}

fn parse_selection_line(line: &str) -> Result<SelectionLine, String> {
    let fields: Vec<&str> = line.split(';').map(str::trim).collect();
    let [ids, range, sizes] = fields[..] else {
        return Err(format!("expected IDS;RANGE;SIZES, got {}", shown(line)));
    };
    let mut projects = Vec::new();
    if !ids.is_empty() {
        let mut seen = HashSet::new();
        for id in ids.split(',') {
            let id = id.trim();
            match id.parse::<u64>() {
                // A repeated id adds no candidate: dropped before anything is loaded.
                Ok(v) if is_digits(id) => {
                    if seen.insert(v) {
                        projects.push(v);
                    }
                }
                _ => return Err(format!("bad project id {} in {}", shown(id), shown(ids))),
            }
        }
    }
    if range.is_empty() {
        return Err(format!("the range is empty in {}", shown(line)));
    }
    let ranges = range
        .split(',')
        .map(|item| {
            let item = item.trim();
            parse_range(item).map_err(|why| format!("bad range {}: {why}", shown(item)))
        })
        .collect::<Result<_, _>>()?;
    let sizes = parse_sizes(sizes)?;
    Ok(SelectionLine {
        projects,
        ranges,
        sizes,
    })
}

/// `N` or `A~B` with 1 <= A <= B.
fn parse_range(item: &str) -> Result<(u64, u64), &'static str> {
    let (a, b) = item.split_once('~').unwrap_or((item, item));
    let position = |s: &str| -> Result<u64, &'static str> {
        let s = s.trim();
        if !is_digits(s) {
            return Err("expected N or A~B");
        }
        match s.parse::<u64>() {
            Ok(0) => Err("positions start at 1"),
            Ok(v) => Ok(v),
            Err(_) => Err("number too large"),
        }
    };
    let (a, b) = (position(a)?, position(b)?);
    if a > b {
        return Err("start is after end");
    }
    Ok((a, b))
}

/// Quote a piece of user text for an error message, cut if it is long.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

impl Rule {
    /// Other project ids the rule reads (selection form), each once, in order
    /// of first use, so the caller can load their inventories.
    #[must_use]
    pub fn referenced_projects(&self) -> Vec<u64> {
        let Rule::Selection(lines) = self else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        lines
            .iter()
            .flat_map(|l| l.projects.iter().copied())
            .filter(|p| seen.insert(*p))
            .collect()
    }

    /// Compute batches. `inventory` = this project's node names in inventory
    /// order. `nodes_of(pid)` = inventory of project `pid` in order (called
    /// once for each id of [`Rule::referenced_projects`]). List rules come
    /// back as they are: the caller checks that every node exists.
    ///
    /// # Errors
    /// More than [`MAX_BATCHES`] batches.
    pub fn batches(
        &self,
        inventory: &[String],
        nodes_of: &dyn Fn(u64) -> Vec<String>,
    ) -> Result<Vec<Vec<String>>, String> {
        let out = match self {
            Rule::List(batches) => batches.clone(),
            Rule::Simple(sizes) => {
                if batch_sizes_exceed(inventory.len(), sizes) {
                    return Err(too_many_batches());
                }
                split(inventory, sizes)
            }
            Rule::Selection(lines) => {
                let own: HashSet<&str> = inventory.iter().map(String::as_str).collect();
                // Each other inventory is read once, and reduced once to the
                // nodes this project has (the only ones a line may select).
                let loaded: Vec<(u64, Vec<String>)> = self
                    .referenced_projects()
                    .into_iter()
                    .map(|p| (p, nodes_of(p)))
                    .collect();
                let candidates_of: std::collections::HashMap<u64, Vec<&str>> = loaded
                    .iter()
                    .map(|(p, names)| (*p, own_unique(names.iter().map(String::as_str), &own)))
                    .collect();
                let all_own = own_unique(inventory.iter().map(String::as_str), &own);
                // Lines naming the same several projects share their merge.
                let mut merged: std::collections::HashMap<&[u64], Vec<&str>> =
                    std::collections::HashMap::new();
                let mut out = Vec::new();
                for line in lines {
                    let candidates: &[&str] = match line.projects.as_slice() {
                        [] => &all_own,
                        [p] => candidates_of.get(p).map_or(&[], Vec::as_slice),
                        many => merged.entry(many).or_insert_with(|| {
                            let mut seen = HashSet::new();
                            many.iter()
                                .filter_map(|p| candidates_of.get(p))
                                .flatten()
                                .copied()
                                .filter(|n| seen.insert(*n))
                                .collect()
                        }),
                    };
                    let selected = select(candidates, &line.ranges);
                    if out.len() + batch_sizes_count(selected.len(), &line.sizes) > MAX_BATCHES {
                        return Err(too_many_batches());
                    }
                    out.extend(split(&selected, &line.sizes));
                }
                out
            }
        };
        if out.len() > MAX_BATCHES {
            return Err(too_many_batches());
        }
        Ok(out)
    }
}

/// `names` in order, once each, keeping only those in `own`.
fn own_unique<'a>(names: impl Iterator<Item = &'a str>, own: &HashSet<&str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names
        .filter(|n| own.contains(n) && seen.insert(*n))
        .collect()
}

/// The candidates at the positions of `ranges`, in the order listed, each
/// once. O(ranges + candidates): a position taken is skipped over, so
/// ranges that repeat cost nothing more.
fn select<'a>(candidates: &[&'a str], ranges: &[(u64, u64)]) -> Vec<&'a str> {
    let len = candidates.len();
    let bounds = |&(a, b): &(u64, u64)| {
        // 1-based inclusive; bounded by the candidate count, so
        // `1~18446744073709551615` is cheap.
        let first = usize::try_from(a).unwrap_or(usize::MAX).max(1) - 1;
        let last = usize::try_from(b).unwrap_or(usize::MAX).min(len);
        (first, last)
    };
    if let [one] = ranges {
        let (first, last) = bounds(one);
        return candidates.get(first..last).unwrap_or(&[]).to_vec();
    }
    // next[i]: the first position >= i not taken yet (len = none), with
    // path halving, so runs of taken positions are crossed in one step.
    let mut next: Vec<usize> = (0..=len).collect();
    fn find(next: &mut [usize], mut i: usize) -> usize {
        while next[i] != i {
            next[i] = next[next[i]];
            i = next[i];
        }
        i
    }
    let mut selected = Vec::new();
    for range in ranges {
        let (first, last) = bounds(range);
        if first >= last {
            continue;
        }
        let mut i = find(&mut next, first);
        while i < last {
            selected.push(candidates[i]);
            next[i] = i + 1;
            i = find(&mut next, i + 1);
        }
    }
    selected
}

/// How many batches `specs` cut `len` nodes into, counted without building
/// them.
fn batch_sizes_count(len: usize, specs: &[Size]) -> usize {
    let mut left = len;
    let mut n = 0;
    let mut i = 0;
    while left > 0 {
        let spec = specs
            .get(i)
            .or(specs.last())
            .copied()
            .unwrap_or(Size::Count(1));
        left -= spec.take(len).min(left);
        n += 1;
        i += 1;
        if n > MAX_BATCHES {
            break;
        }
    }
    n
}

fn batch_sizes_exceed(len: usize, specs: &[Size]) -> bool {
    batch_sizes_count(len, specs) > MAX_BATCHES
}

/// Sizes of the consecutive batches that cut `len` nodes by `specs`; the last
/// spec repeats, no specs = one node per batch. Sums to `len`; every entry >= 1.
#[must_use]
pub fn batch_sizes(len: usize, specs: &[Size]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = len;
    let mut i = 0;
    while left > 0 {
        let spec = specs
            .get(i)
            .or(specs.last())
            .copied()
            .unwrap_or(Size::Count(1));
        let take = spec.take(len).min(left);
        out.push(take);
        left -= take;
        i += 1;
    }
    out
}

fn split<S: AsRef<str>>(nodes: &[S], specs: &[Size]) -> Vec<Vec<String>> {
    let mut rest = nodes;
    batch_sizes(nodes.len(), specs)
        .into_iter()
        .map(|n| {
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            batch.iter().map(|s| s.as_ref().to_owned()).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
        range.map(|i| i.to_string()).collect()
    }

    fn owned(batches: &[&[&str]]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| b.iter().map(ToString::to_string).collect())
            .collect()
    }

    /// Project 10 = nodes 1…10, project 20 = {5, 99, 3} (docs/semantics.md §2.3).
    fn projects(pid: u64) -> Vec<String> {
        match pid {
            10 => names(1..=10),
            20 => vec!["5".into(), "99".into(), "3".into()],
            _ => Vec::new(),
        }
    }

    fn percent(text: &str, inventory: &[String]) -> Vec<Vec<String>> {
        let rule = parse(GroupType::Percent, text)
            .unwrap_or_else(|e| panic!("{text:?} should parse, got {e}"));
        rule.batches(inventory, &projects)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn percent_err(text: &str) -> String {
        match parse(GroupType::Percent, text) {
            Ok(rule) => panic!("{text:?} should be refused, got {rule:?}"),
            Err(e) => e,
        }
    }

    fn list_err(text: &str) -> String {
        match parse(GroupType::List, text) {
            Ok(rule) => panic!("{text:?} should be refused, got {rule:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn group_type_round_trip() {
        for t in [GroupType::List, GroupType::Percent] {
            assert_eq!(GroupType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(GroupType::parse("List"), None);
        assert_eq!(GroupType::parse(""), None);
    }

    #[test]
    fn list_examples() {
        let cases: &[(&str, &[&[&str]])] = &[
            ("node1,node2;node3", &[&["node1", "node2"], &["node3"]]),
            ("a,b\nc;d", &[&["a", "b"], &["c"], &["d"]]),
            ("a,b\r\nc;d", &[&["a", "b"], &["c"], &["d"]]),
            ("a;;b", &[&["a"], &["b"]]),
            (" a , b ", &[&["a", "b"]]),
            ("a,,b,;\n;c", &[&["a", "b"], &["c"]]),
            ("ghost", &[&["ghost"]]),
        ];
        for &(text, want) in cases {
            let rule = parse(GroupType::List, text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(rule, Rule::List(owned(want)), "{text:?}");
            // Returned as-is, whatever the inventory.
            assert_eq!(rule.batches(&[], &projects), Ok(owned(want)), "{text:?}");
            assert!(rule.referenced_projects().is_empty());
        }
    }

    #[test]
    fn list_errors() {
        for text in ["", ";", " ; \n , ;\r\n"] {
            assert_eq!(list_err(text), "the group has no nodes", "{text:?}");
        }
        assert_eq!(list_err("a,b;a"), "duplicate node \"a\"");
        assert_eq!(list_err("a, b\n b "), "duplicate node \"b\"");
        let long = "x".repeat(101);
        let e = list_err(&long);
        assert!(e.contains("longer than 100"), "{e}");
        assert!(e.contains("xxxx"), "{e}");
        assert!(e.len() < 120, "long names are cut in messages: {e}");
        let e = list_err("a\u{7}b");
        assert_eq!(e, "node name \"a\\u{7}b\" contains a control character");
        let e = list_err("a\tb");
        assert!(e.contains("control character"), "{e}");
    }

    #[test]
    fn list_names() {
        let hundred = "é".repeat(100);
        assert_eq!(parse_list(&hundred), Ok(vec![vec![hundred.clone()]]));
        // A trailing \r is whitespace and trimmed; tabs around a name too.
        assert_eq!(parse_list("\ta\r"), Ok(owned(&[&["a"]])));
        assert_eq!(parse_list("a b"), Ok(owned(&[&["a b"]])));
    }

    #[test]
    fn pip_variable() {
        assert_eq!(parse_list("a,b;c"), Ok(owned(&[&["a", "b"], &["c"]])));
        assert_eq!(parse_list(""), Err("the group has no nodes".to_owned()));
    }

    #[test]
    fn simple_examples_ten_nodes() {
        let inv = names(1..=10);
        let ten_ones: &[&[&str]] = &[
            &["1"],
            &["2"],
            &["3"],
            &["4"],
            &["5"],
            &["6"],
            &["7"],
            &["8"],
            &["9"],
            &["10"],
        ];
        let all: &[&[&str]] = &[&["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]];
        let cases: &[(&str, &[&[&str]])] = &[
            (
                "1:2:10%:5%",
                &[
                    &["1"],
                    &["2", "3"],
                    &["4"],
                    &["5"],
                    &["6"],
                    &["7"],
                    &["8"],
                    &["9"],
                    &["10"],
                ],
            ),
            (
                "1:2:%10:%5",
                &[
                    &["1"],
                    &["2", "3"],
                    &["4"],
                    &["5"],
                    &["6"],
                    &["7"],
                    &["8"],
                    &["9"],
                    &["10"],
                ],
            ),
            (
                "3",
                &[
                    &["1", "2", "3"],
                    &["4", "5", "6"],
                    &["7", "8", "9"],
                    &["10"],
                ],
            ),
            (
                "2:30%",
                &[
                    &["1", "2"],
                    &["3", "4", "5"],
                    &["6", "7", "8"],
                    &["9", "10"],
                ],
            ),
            (
                "50%",
                &[&["1", "2", "3", "4", "5"], &["6", "7", "8", "9", "10"]],
            ),
            (
                "25.5%",
                &[
                    &["1", "2"],
                    &["3", "4"],
                    &["5", "6"],
                    &["7", "8"],
                    &["9", "10"],
                ],
            ),
            ("100%", all),
            ("150%", all),
            ("", ten_ones),
        ];
        for &(text, want) in cases {
            assert_eq!(percent(text, &inv), owned(want), "{text:?}");
        }
    }

    #[test]
    fn simple_examples_twenty_five_nodes() {
        let inv = names(1..=25);
        let mut want: Vec<Vec<String>> = owned(&[&["1"], &["2", "3"], &["4", "5"]]);
        want.extend((6..=25).map(|i| vec![i.to_string()]));
        assert_eq!(percent("1:2:10%:5%", &inv), want);
        assert_eq!(
            percent("2:20%", &inv),
            owned(&[
                &["1", "2"],
                &["3", "4", "5", "6", "7"],
                &["8", "9", "10", "11", "12"],
                &["13", "14", "15", "16", "17"],
                &["18", "19", "20", "21", "22"],
                &["23", "24", "25"],
            ])
        );
    }

    #[test]
    fn parsed_sizes() {
        let cases: &[(&str, &[Size])] = &[
            ("", &[]),
            ("  \r\n", &[]),
            (
                "1:2:10%:%5",
                &[
                    Size::Count(1),
                    Size::Count(2),
                    Size::Percent(10_000_000),
                    Size::Percent(5_000_000),
                ],
            ),
            ("25.5%", &[Size::Percent(25_500_000)]),
            ("0.000001%", &[Size::Percent(1)]),
            ("%12.50000000000", &[Size::Percent(12_500_000)]),
            ("007", &[Size::Count(7)]),
            (" 1 : 2 ", &[Size::Count(1), Size::Count(2)]),
            ("3\n", &[Size::Count(3)]),
            ("18446744073709551615", &[Size::Count(u64::MAX)]),
        ];
        for &(text, want) in cases {
            assert_eq!(
                parse(GroupType::Percent, text),
                Ok(Rule::Simple(want.to_vec())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn simple_errors() {
        let cases: &[(&str, &str)] = &[
            ("0", "bad batch size \"0\" in \"0\""),
            ("0%", "bad batch size \"0%\""),
            ("%0.0", "bad batch size \"%0.0\""),
            ("-1", "bad batch size \"-1\""),
            ("+1", "bad batch size \"+1\""),
            ("5::1", "empty batch size in \"5::1\""),
            ("1:", "empty batch size in \"1:\""),
            (":1", "empty batch size in \":1\""),
            ("abc", "bad batch size \"abc\""),
            (
                "5:1.5",
                "bad batch size \"1.5\" in \"5:1.5\": expected a whole",
            ),
            ("10 %", "bad batch size \"10 %\""),
            ("%", "bad batch size \"%\""),
            ("%10%", "bad batch size \"%10%\""),
            ("1e3", "bad batch size \"1e3\""),
            (".5%", "bad batch size \".5%\""),
            ("5.%", "bad batch size \"5.%\""),
            ("1.2.3%", "bad batch size \"1.2.3%\""),
            ("1\n2", "bad batch size \"1\\n2\""),
            ("１", "bad batch size \"１\""),
            ("18446744073709551616", "number too large"),
            ("99999999999999999999999999999999%", "number too large"),
            ("18446744073709552%", "number too large"),
            ("1.0000001%", "at most 6 decimals"),
        ];
        for &(text, want) in cases {
            let e = percent_err(text);
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn long_text_is_cut_in_errors() {
        let text = format!("{}x", "1:".repeat(10_000));
        let e = percent_err(&text);
        assert!(e.starts_with("bad batch size \"x\" in \"1:1:"), "{e}");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn percent_math_is_exact() {
        // In floating point 100 × 0.29 = 28.999… and 100 × 0.57 = 56.999…
        let hundred = names(1..=100);
        let sizes =
            |text: &str| -> Vec<usize> { percent(text, &hundred).iter().map(Vec::len).collect() };
        assert_eq!(sizes("29%"), [29, 29, 29, 13]);
        assert_eq!(sizes("57%"), [57, 43]);
        assert_eq!(sizes("%14.3"), [14, 14, 14, 14, 14, 14, 14, 2]);
        let ten = names(1..=10);
        assert_eq!(percent("29%", &ten).len(), 5); // floor(2.9) = 2
        assert_eq!(batch_sizes(1000, &[Size::Percent(14_300_000)])[0], 143);
        assert_eq!(batch_sizes(3, &[Size::Percent(33_333_334)]), [1, 1, 1]);
        assert_eq!(
            batch_sizes(300, &[Size::Percent(33_333_334)]),
            [100, 100, 100]
        );
        // 0.000001% is one node per 10^8.
        assert_eq!(Size::Percent(1).take(99_999_999), 1);
        assert_eq!(Size::Percent(1).take(299_999_999), 2);
        assert_eq!(Size::Percent(1).take(300_000_000), 3);
    }

    #[test]
    fn batch_size_edges() {
        assert!(batch_sizes(0, &[]).is_empty());
        assert!(batch_sizes(0, &[Size::Count(3)]).is_empty());
        assert_eq!(batch_sizes(3, &[]), [1, 1, 1]);
        assert_eq!(batch_sizes(5, &[Size::Count(u64::MAX)]), [5]);
        assert_eq!(batch_sizes(5, &[Size::Percent(u64::MAX)]), [5]);
        assert_eq!(
            batch_sizes(usize::MAX, &[Size::Percent(u64::MAX)]),
            [usize::MAX]
        );
        assert_eq!(
            batch_sizes(usize::MAX, &[Size::Percent(50 * PERCENT_SCALE)]),
            [usize::MAX / 2, usize::MAX / 2, 1]
        );
        // Hand-built zero sizes still end: each batch takes at least one node.
        assert_eq!(batch_sizes(3, &[Size::Count(0)]), [1, 1, 1]);
        assert_eq!(batch_sizes(2, &[Size::Percent(0)]), [1, 1]);
        // Specs past the nodes are not used.
        assert_eq!(batch_sizes(2, &[Size::Count(5), Size::Count(1)]), [2]);
    }

    #[test]
    fn empty_inventory_gives_no_batches() {
        for text in ["", "3", "1:2:10%:5%", "100%", ";1~3;1", "10;1~10;2"] {
            let rule = parse(GroupType::Percent, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rule.batches(&[], &projects), Ok(Vec::new()), "{text:?}");
        }
    }

    #[test]
    fn selection_examples() {
        let inv = names(1..=10);
        let cases: &[(&str, &[&[&str]])] = &[
            (
                ";1~3;1\n;4~10;50%",
                &[
                    &["1"],
                    &["2"],
                    &["3"],
                    &["4", "5", "6"],
                    &["7", "8", "9"],
                    &["10"],
                ],
            ),
            ("20;1~5;2", &[&["5", "3"]]),
            (
                "20,10;1~20;5",
                &[&["5", "3", "1", "2", "4"], &["6", "7", "8", "9", "10"]],
            ),
            (";2,5,7~8;1:100%", &[&["2"], &["5", "7", "8"]]),
            (
                "20;1~2;1\n;1~4;2",
                &[&["5"], &["3"], &["1", "2"], &["3", "4"]],
            ),
        ];
        for &(text, want) in cases {
            assert_eq!(percent(text, &inv), owned(want), "{text:?}");
            let crlf = text.replace('\n', "\r\n");
            assert_eq!(percent(&crlf, &inv), owned(want), "{crlf:?}");
        }
    }

    #[test]
    fn selection_choices() {
        let inv = names(1..=10);
        let cases: &[(&str, &[&[&str]])] = &[
            // Empty SIZES = one node per batch.
            (";1~3;", &[&["1"], &["2"], &["3"]]),
            // RANGE order is kept; a position listed again is ignored.
            (";5,2;1", &[&["5"], &["2"]]),
            (";2,1~3,2;1", &[&["2"], &["1"], &["3"]]),
            // Positions past the end are ignored, even huge ones.
            (";9~18446744073709551615,40;5", &[&["9", "10"]]),
            (";11~20;1", &[]),
            // Blank lines are skipped; whitespace around pieces is ignored.
            (" ; 1 ~ 2 ; 1 \n\n  \r\n;3;%50", &[&["1"], &["2"], &["3"]]),
            // A listed project twice, and this project by its id.
            ("20,20;1~9;9", &[&["5", "3"]]),
            ("10;10;1", &[&["10"]]),
            // A project with no nodes selects nothing.
            ("30;1~3;1", &[]),
        ];
        for &(text, want) in cases {
            assert_eq!(percent(text, &inv), owned(want), "{text:?}");
        }
    }

    #[test]
    fn selection_parsed() {
        assert_eq!(
            parse(GroupType::Percent, "20, 10;1~3,5;2:10%\n\n;7;"),
            Ok(Rule::Selection(vec![
                SelectionLine {
                    projects: vec![20, 10],
                    ranges: vec![(1, 3), (5, 5)],
                    sizes: vec![Size::Count(2), Size::Percent(10_000_000)],
                },
                SelectionLine {
                    projects: vec![],
                    ranges: vec![(7, 7)],
                    sizes: vec![],
                },
            ]))
        );
    }

    #[test]
    fn selection_errors() {
        let cases: &[(&str, &str)] = &[
            (";0~2;1", "line 1: bad range \"0~2\": positions start at 1"),
            (";3~1;1", "line 1: bad range \"3~1\": start is after end"),
            ("1;;1", "line 1: the range is empty in \"1;;1\""),
            (";1;1\n;3~1;1", "line 2: bad range \"3~1\""),
            (";1;1\n\n;0;1", "line 3: bad range \"0\""),
            (";1;1\nfoo", "line 2: expected IDS;RANGE;SIZES, got \"foo\""),
            ("1;2", "line 1: expected IDS;RANGE;SIZES, got \"1;2\""),
            ("1;2;3;4", "line 1: expected IDS;RANGE;SIZES"),
            (";", "line 1: expected IDS;RANGE;SIZES"),
            ("x;1;1", "line 1: bad project id \"x\" in \"x\""),
            (",20;1;1", "line 1: bad project id \"\" in \",20\""),
            ("-1;1;1", "line 1: bad project id \"-1\""),
            ("99999999999999999999;1;1", "line 1: bad project id"),
            (";1~;1", "line 1: bad range \"1~\""),
            (";~3;1", "line 1: bad range \"~3\""),
            (";1~2~3;1", "line 1: bad range \"1~2~3\""),
            (";1,,2;1", "line 1: bad range \"\""),
            (";a;1", "line 1: bad range \"a\""),
            (";-1;1", "line 1: bad range \"-1\""),
            (";1~99999999999999999999;1", "number too large"),
            (";1;0", "line 1: bad batch size \"0\" in \"0\""),
            (";1;5::1", "line 1: empty batch size in \"5::1\""),
            (";1;10 %", "line 1: bad batch size \"10 %\""),
        ];
        for &(text, want) in cases {
            let e = percent_err(text);
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn referenced_projects_and_loading() {
        let rule = parse(GroupType::Percent, "20,10;1;1\n;1;1\n30,20;1;1").unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(rule.referenced_projects(), [20, 10, 30]);
        let asked = RefCell::new(Vec::new());
        let loader = |pid: u64| {
            asked.borrow_mut().push(pid);
            projects(pid)
        };
        assert_eq!(
            rule.batches(&names(1..=10), &loader),
            Ok(owned(&[&["5"], &["1"], &["5"]]))
        );
        // Each inventory is read once, in order of first use.
        assert_eq!(asked.into_inner(), [20, 10, 30]);

        let simple = parse(GroupType::Percent, "1").unwrap_or_else(|e| panic!("{e}"));
        assert!(simple.referenced_projects().is_empty());
        let own = parse(GroupType::Percent, ";1;1").unwrap_or_else(|e| panic!("{e}"));
        assert!(own.referenced_projects().is_empty());
        let never = |_: u64| -> Vec<String> { panic!("no other project is read") };
        assert_eq!(own.batches(&names(1..=3), &never), Ok(owned(&[&["1"]])));
    }

    #[test]
    fn hand_built_selection_does_not_panic() {
        let rule = Rule::Selection(vec![SelectionLine {
            projects: vec![],
            ranges: vec![(0, 2), (5, 3), (u64::MAX, u64::MAX)],
            sizes: vec![Size::Count(0)],
        }]);
        assert_eq!(
            rule.batches(&names(1..=3), &projects),
            Ok(owned(&[&["1"], &["2"]]))
        );
    }

    #[test]
    fn duplicate_inventory_names_are_selected_once() {
        let inv: Vec<String> = ["a", "b", "a"].iter().map(ToString::to_string).collect();
        assert_eq!(percent(";1~3;", &inv), owned(&[&["a"], &["b"]]));
    }

    #[test]
    fn repeated_ids_are_dropped_when_parsed() {
        let text = "52,".repeat(33_000) + "52;1;1";
        let rule = parse(GroupType::Percent, &text).unwrap_or_else(|e| panic!("{e}"));
        let Rule::Selection(lines) = &rule else {
            panic!("a selection rule")
        };
        assert_eq!(lines[0].projects, [52]);
        let asked = RefCell::new(0);
        let loader = |pid: u64| {
            *asked.borrow_mut() += 1;
            assert_eq!(pid, 52);
            names(1..=300)
        };
        assert_eq!(rule.batches(&names(1..=300), &loader), Ok(owned(&[&["1"]])));
        assert_eq!(asked.into_inner(), 1);
    }

    #[test]
    fn repeated_ranges_select_once() {
        let text = format!(";{}3,1~2;2", "1~300,".repeat(2_000));
        let got = percent(&text, &names(1..=300));
        assert_eq!(got.len(), 150);
        assert_eq!(got[0], ["1", "2"]);
        assert_eq!(got[149], ["299", "300"]);
        assert_eq!(
            percent(";3,1~2;1", &names(1..=5)),
            owned(&[&["3"], &["1"], &["2"]])
        );
    }

    #[test]
    fn batch_limit() {
        let many = names(1..=(MAX_BATCHES as u32 + 1));
        let simple = parse(GroupType::Percent, "1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(simple.batches(&many, &projects), Err(too_many_batches()));
        assert_eq!(
            simple
                .batches(&many[..MAX_BATCHES], &projects)
                .map(|b| b.len()),
            Ok(MAX_BATCHES)
        );
        let sel = parse(GroupType::Percent, ";1~20000;1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sel.batches(&many, &projects), Err(too_many_batches()));
        let lines = ";1~2;1\n".repeat(MAX_BATCHES / 2 + 1);
        let rule = parse(GroupType::Percent, &lines).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule.batches(&many, &projects), Err(too_many_batches()));
        let list: String = (0..=MAX_BATCHES).map(|i| format!("n{i};")).collect();
        let e = parse(GroupType::List, &list).unwrap_err();
        assert!(e.contains("more than 10000 batches"), "{e}");
        assert!(parse(GroupType::List, &list[..list.len() - 7]).is_ok());
    }
}
