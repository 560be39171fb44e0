//! The shape of the code, checked: no module imports go in circles, in any crate of the
//! workspace, and the proxy crate's modules import only what the layering table in
//! docs/ARCHITECTURE.md allows. The table lives in the document and this test reads it, so the
//! picture a newcomer reads and the code cannot drift apart: change one and this test makes
//! you change the other.
//!
//! The import graph is read from the source with a small lexer (comments and literals
//! skipped): modules are the files reached through `mod` declarations from each crate root;
//! an edge is a `use crate::…`, `use super::…`, `use self::…` or a path written inline
//! (`crate::a::B`), resolved to the file that defines the name (following `pub use`
//! re-exports, so a `mod.rs` that only re-exports is not a false circle). A `super` inside an
//! inline `mod tests { … }` stays in its own file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One crate target: a label, its root file (lib.rs or main.rs), and the library crate its
/// code reaches by name (the binary's `poynt_proxy::…`).
struct Target {
    label: &'static str,
    root: PathBuf,
    lib_alias: Option<(&'static str, &'static str)>,
}

/// A module is identified by its crate label and its path below the crate root.
type ModKey = (String, Vec<String>);

#[derive(Default)]
struct Module {
    file: PathBuf,
    /// `pub use` re-exports: the name it is known by here → (inline depth, the path written).
    reexports: HashMap<String, (usize, Vec<String>)>,
    /// Every path this file names: (inline depth, segments).
    paths: Vec<(usize, Vec<String>)>,
}

#[derive(Default)]
struct Graph {
    modules: BTreeMap<ModKey, Module>,
    /// from → to → the names the first takes from the second.
    edges: BTreeMap<ModKey, BTreeMap<ModKey, BTreeSet<String>>>,
}

// ---------- the lexer ----------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(&'static str),
}

/// Identifiers and the punctuation a path is made of; comments, strings, chars and
/// everything else dropped.
fn lex(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r'
            && matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
            && raw_string_at(b, i + 1)
        {
            i = skip_raw_string(b, i + 1);
        } else if c == b'b' && b.get(i + 1) == Some(&b'r') && raw_string_at(b, i + 2) {
            i = skip_raw_string(b, i + 2);
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if let Some(len) = src[i + 1..].chars().next().map(char::len_utf8) {
                if b.get(i + 1 + len) == Some(&b'\'') {
                    i += len + 2;
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if b[start..i] == *b"r" && b.get(i) == Some(&b'#') {
                // A raw identifier: r#type.
                i += 1;
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(src[s..i].to_string()));
            } else {
                out.push(Tok::Ident(src[start..i].to_string()));
            }
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Tok::Punct("::"));
            i += 2;
        } else {
            let p = match c {
                b'{' => Some("{"),
                b'}' => Some("}"),
                b',' => Some(","),
                b';' => Some(";"),
                b'*' => Some("*"),
                b'(' => Some("("),
                b')' => Some(")"),
                b'#' => Some("#"),
                b'!' => Some("!"),
                b'=' => Some("="),
                b'<' => Some("<"),
                _ => None,
            };
            if let Some(p) = p {
                out.push(Tok::Punct(p));
            }
            i += 1;
        }
    }
    out
}

fn raw_string_at(b: &[u8], mut i: usize) -> bool {
    while b.get(i) == Some(&b'#') {
        i += 1;
    }
    b.get(i) == Some(&b'"')
}

fn skip_raw_string(b: &[u8], mut i: usize) -> usize {
    let mut hashes = 0;
    while b[i] == b'#' {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < b.len() {
        if b[i] == b'"'
            && b[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == b'#')
                .count()
                == hashes
        {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

// ---------- reading one file ----------

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is(t: Option<&Tok>, p: &str) -> bool {
    matches!(t, Some(Tok::Punct(q)) if *q == p)
}

/// What one file says: its `mod x;` declarations, the paths it names, its re-exports.
#[derive(Default)]
struct FileFacts {
    mods: Vec<String>,
    paths: Vec<(usize, Vec<String>)>,
    reexports: HashMap<String, (usize, Vec<String>)>,
}

fn read_facts(src: &str) -> FileFacts {
    let toks = lex(src);
    let mut facts = FileFacts::default();
    // For each open brace: does it open an inline `mod name {`?
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let depth = braces.iter().filter(|inline| **inline).count();
        match &toks[i] {
            Tok::Punct("{") => {
                let inline_mod = i >= 2 && ident(toks.get(i - 2)) == Some("mod");
                braces.push(inline_mod);
                i += 1;
            }
            Tok::Punct("}") => {
                braces.pop();
                i += 1;
            }
            Tok::Ident(w)
                if w == "mod" && ident(toks.get(i + 1)).is_some() && is(toks.get(i + 2), ";") =>
            {
                if depth == 0 {
                    facts
                        .mods
                        .push(ident(toks.get(i + 1)).unwrap_or_default().to_string());
                }
                i += 3;
            }
            Tok::Ident(w) if w == "use" => {
                let public = i >= 1
                    && (ident(toks.get(i - 1)) == Some("pub")
                        || (is(toks.get(i - 1), ")")
                            && (1..=4).any(|k| i > k && ident(toks.get(i - k)) == Some("pub"))));
                let mut trees = Vec::new();
                i = parse_use_tree(&toks, i + 1, Vec::new(), &mut trees);
                for (path, name) in trees {
                    if public && name != "*" && name != "_" {
                        facts.reexports.insert(name, (depth, path.clone()));
                    }
                    facts.paths.push((depth, path));
                }
            }
            Tok::Ident(w)
                if matches!(w.as_str(), "crate" | "super" | "self" | "poynt_proxy")
                    && is(toks.get(i + 1), "::")
                    && !(i >= 1 && is(toks.get(i - 1), "::")) =>
            {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while is(toks.get(j), "::") {
                    match ident(toks.get(j + 1)) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                facts.paths.push((depth, path));
                i = j;
            }
            _ => i += 1,
        }
    }
    facts
}

/// Parses one use tree starting at `i`; pushes (full path, the name it binds) for each leaf.
/// Returns the index after the tree (after `;` at the top level).
fn parse_use_tree(
    toks: &[Tok],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    let mut path = prefix;
    if is(toks.get(i), "::") {
        i += 1;
    }
    loop {
        match toks.get(i) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                i += 1;
                if is(toks.get(i), "::") {
                    i += 1;
                    continue;
                }
                let mut name = path.last().cloned().unwrap_or_default();
                if ident(toks.get(i)) == Some("as") {
                    name = ident(toks.get(i + 1)).unwrap_or("_").to_string();
                    i += 2;
                }
                if name == "self" {
                    path.pop();
                    name = path.last().cloned().unwrap_or_default();
                }
                out.push((path, name));
                break;
            }
            Some(Tok::Punct("*")) => {
                path.push("*".into());
                out.push((path, "*".into()));
                i += 1;
                break;
            }
            Some(Tok::Punct("{")) => {
                i += 1;
                while !is(toks.get(i), "}") && i < toks.len() {
                    i = parse_use_tree(toks, i, path.clone(), out);
                    if is(toks.get(i), ",") {
                        i += 1;
                    }
                }
                i += 1;
                break;
            }
            _ => break,
        }
    }
    if is(toks.get(i), ";") {
        i += 1;
    }
    i
}

// ---------- the module tree and the edges ----------

fn child_file(parent: &Path, parent_is_dir_owner: bool, name: &str) -> Option<(PathBuf, bool)> {
    let dir = if parent_is_dir_owner {
        parent.parent()?.to_path_buf()
    } else {
        parent.with_extension("")
    };
    let flat = dir.join(format!("{name}.rs"));
    let nested = dir.join(name).join("mod.rs");
    if flat.is_file() {
        Some((flat, false))
    } else if nested.is_file() {
        Some((nested, true))
    } else {
        None
    }
}

fn load(graph: &mut Graph, target: &Target) {
    let mut pending = vec![(target.root.clone(), true, Vec::<String>::new())];
    while let Some((file, owns_dir, path)) = pending.pop() {
        let src = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("expected to read {}: {e}", file.display()));
        let facts = read_facts(&src);
        for m in &facts.mods {
            let (child, child_owns_dir) = child_file(&file, owns_dir, m).unwrap_or_else(|| {
                panic!(
                    "{} declares `mod {m};` but neither {m}.rs nor {m}/mod.rs exists",
                    file.display()
                )
            });
            let mut p = path.clone();
            p.push(m.clone());
            pending.push((child, child_owns_dir, p));
        }
        graph.modules.insert(
            (target.label.to_string(), path),
            Module {
                file,
                reexports: facts.reexports,
                paths: facts.paths,
            },
        );
    }
}

/// Resolves a path named in module `from` (at inline depth `depth`) to the module that
/// defines its item, and the item's name. `None` when the path leaves the crates loaded,
/// stays in `from`'s own file, or names nothing known.
fn resolve(
    graph: &Graph,
    aliases: &HashMap<String, String>,
    from: &ModKey,
    depth: usize,
    segs: &[String],
    hops: usize,
) -> Option<(ModKey, String)> {
    if hops > 16 {
        return None;
    }
    let (mut krate, mut base, rest) = match segs.first()?.as_str() {
        "crate" => (from.0.clone(), Vec::new(), &segs[1..]),
        "self" => (from.0.clone(), from.1.clone(), &segs[1..]),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            if ups <= depth {
                return None;
            }
            let ups = ups - depth;
            let mut base = from.1.clone();
            base.truncate(base.len().checked_sub(ups)?);
            (
                from.0.clone(),
                base,
                &segs[segs.iter().take_while(|s| *s == "super").count()..],
            )
        }
        other => {
            // A path that starts at a child module of `from` (`pub use inner::Thing`).
            let mut child = from.1.clone();
            child.push(other.to_string());
            if graph.modules.contains_key(&(from.0.clone(), child)) {
                (from.0.clone(), from.1.clone(), segs)
            } else {
                (aliases.get(other)?.clone(), Vec::new(), &segs[1..])
            }
        }
    };
    let mut rest = rest;
    while let Some(next) = rest.first() {
        let mut deeper = base.clone();
        deeper.push(next.clone());
        if graph.modules.contains_key(&(krate.clone(), deeper.clone())) {
            base = deeper;
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let key = (std::mem::take(&mut krate), base);
    let name = match rest.first() {
        None => return Some((key, String::new())),
        Some(name) if name == "*" => return Some((key, "*".into())),
        Some(name) => name.clone(),
    };
    let module = graph.modules.get(&key)?;
    if let Some((d, target)) = module.reexports.get(&name)
        && let Some(found) = resolve(graph, aliases, &key, *d, target, hops + 1)
    {
        return Some(found);
    }
    Some((key, name))
}

fn build(targets: &[Target]) -> Graph {
    let mut graph = Graph::default();
    for t in targets {
        load(&mut graph, t);
    }
    let mut aliases = HashMap::new();
    for t in targets {
        if let Some((name, label)) = t.lib_alias {
            aliases.insert(name.to_string(), label.to_string());
        }
    }
    let mut edges: BTreeMap<ModKey, BTreeMap<ModKey, BTreeSet<String>>> = BTreeMap::new();
    for (key, module) in &graph.modules {
        for (depth, path) in &module.paths {
            let Some((to, name)) = resolve(&graph, &aliases, key, *depth, path, 0) else {
                continue;
            };
            if &to == key {
                continue;
            }
            edges
                .entry(key.clone())
                .or_default()
                .entry(to)
                .or_default()
                .insert(name);
        }
    }
    graph.edges = edges;
    graph
}

// ---------- circles ----------

/// A folder's `mod.rs` is the folder's face: its files take the shared types from it (the
/// store's trait and errors) while it assembles them, so an edge from a file up to its own
/// folder is not counted towards a circle; edges between folders and between files are.
fn is_ancestor(to: &ModKey, from: &ModKey) -> bool {
    to.0 == from.0 && to.1.len() < from.1.len() && from.1.starts_with(&to.1)
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(graph: &Graph) -> Vec<Vec<ModKey>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: HashMap<&'a ModKey, usize>,
        low: HashMap<&'a ModKey, usize>,
        on_stack: BTreeSet<&'a ModKey>,
        stack: Vec<&'a ModKey>,
        next: usize,
        out: Vec<Vec<ModKey>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a ModKey) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            if let Some(targets) = self.g.edges.get(v) {
                for w in targets.keys().filter(|w| !is_ancestor(w, v)) {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let l = self.low[v].min(self.low[w]);
                        self.low.insert(v, l);
                    } else if self.on_stack.contains(w) {
                        let l = self.low[v].min(self.index[w]);
                        self.low.insert(v, l);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        g: graph,
        index: HashMap::new(),
        low: HashMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.modules.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

fn describe_circles(graph: &Graph, found: &[Vec<ModKey>], root: &Path) -> String {
    let mut msg = String::new();
    for component in found {
        let members: BTreeSet<&ModKey> = component.iter().collect();
        let _ = writeln!(msg, "a circle of {} files:", component.len());
        for from in component {
            for (to, names) in graph.edges.get(from).into_iter().flatten() {
                if members.contains(to) && !is_ancestor(to, from) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let _ = writeln!(
                        msg,
                        "  {} -> {}: {}",
                        shown(graph, from, root),
                        shown(graph, to, root),
                        names.join(", ")
                    );
                }
            }
        }
    }
    msg
}

fn shown(graph: &Graph, key: &ModKey, root: &Path) -> String {
    let file = &graph.modules[key].file;
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

// ---------- the layering table ----------

/// The rows under "## Layering" in docs/ARCHITECTURE.md: `| \`module\` | \`a\`, \`b\` |`.
fn layering_table(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Layering"))
        .expect("expected a \"## Layering\" section in docs/ARCHITECTURE.md; found none");
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [module, allowed, ..] = cells.as_slice() else {
            continue;
        };
        let Some(module) = module.strip_prefix('`').and_then(|m| m.strip_suffix('`')) else {
            continue;
        };
        let allowed: BTreeSet<String> = allowed
            .split(',')
            .filter_map(|a| a.trim().strip_prefix('`').and_then(|a| a.strip_suffix('`')))
            .map(str::to_string)
            .collect();
        table.insert(module.to_string(), allowed);
    }
    assert!(
        !table.is_empty(),
        "expected rows like | `proxy` | `token`, `upstream` | under ## Layering; found none"
    );
    table
}

/// The name a module has in the layering table: its top-level module, or the binary's root.
fn layer(key: &ModKey) -> Option<String> {
    match (key.0.as_str(), key.1.first()) {
        ("bin", None) => Some("main".into()),
        (_, Some(top)) => Some(top.clone()),
        (_, None) => None,
    }
}

fn layering_violations(
    graph: &Graph,
    table: &BTreeMap<String, BTreeSet<String>>,
    root: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let layers: BTreeSet<String> = graph
        .modules
        .keys()
        .filter(|k| k.0 == "lib" || k.0 == "bin")
        .filter_map(layer)
        .collect();
    for l in &layers {
        if !table.contains_key(l) {
            problems.push(format!(
                "module `{l}` has no row in the layering table (docs/ARCHITECTURE.md, ## Layering)"
            ));
        }
    }
    for (l, allowed) in table {
        if !layers.contains(l) {
            problems.push(format!(
                "the layering table has a row for `{l}`, which is not a module of the proxy crate"
            ));
        }
        for a in allowed {
            if !layers.contains(a) {
                problems.push(format!("the layering table lets `{l}` import `{a}`, which is not a module of the proxy crate"));
            }
        }
    }
    for (from, targets) in &graph.edges {
        for (to, names) in targets {
            let (Some(fl), Some(tl)) = (layer(from), layer(to)) else {
                continue;
            };
            if fl == tl
                || !(matches!(from.0.as_str(), "lib" | "bin")
                    && matches!(to.0.as_str(), "lib" | "bin"))
            {
                continue;
            }
            if !table.get(&fl).is_some_and(|allowed| allowed.contains(&tl)) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                problems.push(format!(
                    "{} imports {} from {} (`{fl}` -> `{tl}`), which the layering table does not allow",
                    shown(graph, from, root),
                    names.join(", "),
                    shown(graph, to, root)
                ));
            }
        }
    }
    problems
}

// ---------- the tests ----------

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every crate target of the workspace: the proxy's library and binary, and each crate under
/// crates/ (their own graphs; Cargo already forbids circles between crates).
fn targets(root: &Path) -> Vec<Target> {
    let mut targets = vec![
        Target {
            label: "lib",
            root: root.join("src/lib.rs"),
            lib_alias: Some(("poynt_proxy", "lib")),
        },
        Target {
            label: "bin",
            root: root.join("src/main.rs"),
            lib_alias: None,
        },
    ];
    let crates = root.join("crates");
    let mut names: Vec<PathBuf> = fs::read_dir(&crates)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    for dir in names {
        let lib = dir.join("src/lib.rs");
        if lib.is_file() {
            let label: &'static str = Box::leak(
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
                    .into_boxed_str(),
            );
            targets.push(Target {
                label,
                root: lib,
                lib_alias: None,
            });
        }
    }
    targets
}

#[test]
fn no_module_imports_go_in_circles() {
    let root = workspace();
    let graph = build(&targets(&root));
    assert!(
        graph.modules.len() > 50,
        "expected the whole tree to be read; found {} modules",
        graph.modules.len()
    );
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "expected no import circles; found {}:\n{}",
        found.len(),
        describe_circles(&graph, &found, &root)
    );
}

#[test]
fn the_proxy_crate_imports_only_what_the_layering_table_allows() {
    let root = workspace();
    let graph = build(&targets(&root));
    let doc = fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .expect("expected docs/ARCHITECTURE.md to be readable");
    let problems = layering_violations(&graph, &layering_table(&doc), &root);
    assert!(
        problems.is_empty(),
        "expected the imports to follow docs/ARCHITECTURE.md's layering table; found:\n{}",
        problems.join("\n")
    );
}

/// The checks themselves, on a small crate written here: a circle through a re-export, a
/// `super` inside an inline test module (not an edge), and a forbidden edge are each seen.
#[test]
fn the_checks_see_a_circle_and_a_forbidden_edge_in_a_crate_built_to_have_them() {
    let dir = tempfile::tempdir().expect("expected a temporary directory");
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("low")).expect("expected to create src/low");
    let write =
        |p: &str, s: &str| fs::write(src.join(p), s).expect("expected to write a fixture file");
    write(
        "lib.rs",
        "//! `crate::high::X` in a comment is not an edge.\npub mod high;\npub mod low;\n",
    );
    write("high.rs", "use crate::low::Thing;\npub struct X;\n");
    write("low/mod.rs", "mod inner;\npub use inner::Thing;\n");
    write(
        "low/inner.rs",
        "pub struct Thing;\nfn f() -> &'static str { \"crate::high::X\" }\n#[cfg(test)]\nmod tests { use super::Thing; }\n",
    );
    let target = |extra: Option<&str>| {
        if let Some(code) = extra {
            write("low/inner.rs", code);
        }
        let graph = build(&[Target {
            label: "lib",
            root: src.join("lib.rs"),
            lib_alias: None,
        }]);
        let table = layering_table("# x\n## Layering\n| `high` | `low` |\n| `low` | |\n");
        let violations = layering_violations(&graph, &table, dir.path());
        (circles(&graph).len(), violations.len())
    };
    assert_eq!(
        target(None),
        (0, 0),
        "expected a clean fixture crate to pass both checks"
    );
    assert_eq!(
        target(Some(
            "pub struct Thing;\npub fn g() -> crate::high::X { crate::high::X }\n"
        )),
        (1, 1),
        "expected low/inner.rs -> high.rs to close a circle (through low/mod.rs's re-export) and break the table"
    );
}
