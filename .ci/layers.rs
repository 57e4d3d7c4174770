//! The workspace's import-cycle check (`bash .ci/run` compiles it with rustc alone: std
//! only, no dependencies). For every crate of the workspace it builds the graph of its
//! source files — file A → file B when A names an item of B by a `crate::`, `super::` or
//! `self::` path (in a `use` or inline) — and fails, naming the files and the lines, on
//! any cycle. A file that only declares modules and re-exports them (a crate root, a
//! `mod.rs`) is looked through: a path to an item it re-exports leads to the file that
//! defines it, so a cycle cannot hide behind a re-export.
//!
//! `layers check DIR…` checks the crates whose `src/` directories are given;
//! `layers self-test` plants a cycle in a scratch crate and checks that it is found (and
//! that the same crate without it passes).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A module path inside a crate, e.g. `["cluster", "client"]`; the root is empty.
type ModPath = Vec<String>;

/// One source file of a crate.
struct File {
    path: PathBuf,
    module: ModPath,
    text: String,
}

/// An edge's evidence: where the reference is.
#[derive(Clone)]
struct Site {
    line: usize,
    what: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() > 1 => {
            let mut cycles = 0;
            for dir in &args[1..] {
                cycles += report(&check_crate(Path::new(dir)), Path::new(dir));
            }
            if cycles == 0 {
                println!("no import cycle in {} crates", args.len() - 1);
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("self-test") => self_test(),
        _ => {
            eprintln!("usage: layers check SRC_DIR… | layers self-test");
            ExitCode::from(2)
        }
    }
}

/// Prints the cycles found in `dir`; returns how many.
fn report(cycles: &[Vec<(PathBuf, PathBuf, Site)>], dir: &Path) -> usize {
    for cycle in cycles {
        println!("import cycle in {}:", dir.display());
        for (from, to, site) in cycle {
            println!(
                "  {}:{} → {} ({})",
                from.display(),
                site.line,
                to.display(),
                site.what
            );
        }
    }
    cycles.len()
}

/// The cycles of the crate whose sources are under `src`, each as its edges.
fn check_crate(src: &Path) -> Vec<Vec<(PathBuf, PathBuf, Site)>> {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let by_module: BTreeMap<ModPath, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.module.clone(), i))
        .collect();
    let reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>> = files
        .iter()
        .map(|f| (f.module.clone(), reexports_of(f)))
        .collect();
    let facade: Vec<bool> = files.iter().map(is_facade).collect();
    let mut edges: BTreeMap<(usize, usize), Site> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        for (line, path) in references(&file.text) {
            let Some(absolute) = absolute(&file.module, &path) else {
                continue;
            };
            let Some(target) = resolve(&absolute, &by_module, &reexports) else {
                continue;
            };
            let j = by_module[&target];
            if j != i && !facade[j] {
                edges.entry((i, j)).or_insert(Site {
                    line,
                    what: path.join("::"),
                });
            }
        }
    }
    if std::env::var_os("LAYERS_EDGES").is_some() {
        for ((a, b), site) in &edges {
            eprintln!(
                "  edge {}:{} → {} ({})",
                files[*a].path.display(),
                site.line,
                files[*b].path.display(),
                site.what
            );
        }
    }
    cycles(files.len(), &edges)
        .into_iter()
        .map(|cycle| {
            cycle
                .into_iter()
                .map(|(a, b)| {
                    (
                        files[a].path.clone(),
                        files[b].path.clone(),
                        edges[&(a, b)].clone(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Every `.rs` file under `dir`, with its module path relative to `root`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<File>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let mut module: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            // `src/bin/x.rs` is a crate root of its own.
            if module.first().map(String::as_str) == Some("bin") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            out.push(File { path, module, text });
        }
    }
}

/// A crate root or `mod.rs` that holds no items of its own: only `mod`, `use`, attributes
/// and docs. References to it resolve through its re-exports; it is never a node.
fn is_facade(file: &File) -> bool {
    let mut in_use = false;
    code_lines(&file.text).all(|(_, l)| {
        let l = l.trim();
        let starts_use = ["use ", "pub use ", "pub(crate) use "]
            .iter()
            .any(|p| l.starts_with(p));
        let ok = in_use
            || starts_use
            || l.starts_with('#')
            || ["mod ", "pub mod ", "pub(crate) mod "]
                .iter()
                .any(|p| l.starts_with(p));
        if starts_use || in_use {
            in_use = !l.ends_with(';');
        }
        ok
    })
}

/// Lines that are code: doc and line comments dropped, with their 1-based numbers.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = l.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// The names a module re-exports (`pub use a::b::{C, D as E}`), to the module paths
/// (relative to the re-exporting module) of the items.
fn reexports_of(file: &File) -> BTreeMap<String, ModPath> {
    let mut out = BTreeMap::new();
    for (_, stmt) in use_statements(&file.text) {
        let Some(rest) = stmt
            .strip_prefix("pub use ")
            .or_else(|| stmt.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        for path in expand(rest) {
            let (path, alias) = match path.split_once(" as ") {
                Some((p, a)) => (p.trim().to_owned(), a.trim().to_owned()),
                None => {
                    let last = path.rsplit("::").next().unwrap_or("").to_owned();
                    (path.clone(), last)
                }
            };
            let segments: ModPath = path.split("::").map(str::to_owned).collect();
            out.insert(alias, segments);
        }
    }
    out
}

/// Every `use` statement (whole, to its `;`), with the line it starts on.
fn use_statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (line, code) in code_lines(text) {
        let trimmed = code.trim();
        if current.is_none()
            && (trimmed.starts_with("use ")
                || trimmed.starts_with("pub use ")
                || trimmed.starts_with("pub(crate) use "))
        {
            current = Some((line, String::new()));
        }
        if let Some((_, stmt)) = current.as_mut() {
            stmt.push_str(trimmed);
            stmt.push(' ');
            if trimmed.ends_with(';') {
                let (line, stmt) = current.take().unwrap_or_default();
                out.push((line, stmt.trim_end().trim_end_matches(';').to_owned()));
            }
        }
    }
    out
}

/// The paths of a use tree: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split_whitespace().collect::<Vec<_>>().join(" ")];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p).into_iter().map(move |e| {
                if e == "self" {
                    prefix.trim_end_matches("::").to_owned()
                } else {
                    format!("{prefix}{e}")
                }
            })
        })
        .collect()
}

/// Every path starting `crate::`, `super::` or `self::` in the file's code, with its line:
/// from `use` statements (expanded) and inline.
fn references(text: &str) -> Vec<(usize, ModPath)> {
    let mut out = Vec::new();
    for (line, stmt) in use_statements(text) {
        let tree = stmt
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ")
            .trim_start_matches("use ");
        for path in expand(tree) {
            let path = path.split(" as ").next().unwrap_or("").trim();
            let segments: ModPath = path.split("::").map(str::to_owned).collect();
            if matches!(segments[0].as_str(), "crate" | "super" | "self") {
                out.push((line, segments));
            }
        }
    }
    for (line, code) in code_lines(text) {
        let trimmed = code.trim_start();
        if trimmed.starts_with("use ") || trimmed.starts_with("pub use ") {
            continue;
        }
        for start in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(at) = code[from..].find(start) {
                let at = from + at;
                let before = code[..at].chars().last();
                from = at + start.len();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let segments: ModPath = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                out.push((line, segments));
            }
        }
    }
    out
}

/// `path` as seen from `module`, made absolute (without `crate`).
fn absolute(module: &ModPath, path: &ModPath) -> Option<ModPath> {
    let mut base: ModPath = match path[0].as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => {
            let mut base = module.clone();
            base.pop()?;
            base
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().map(String::as_str) == Some("super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| *s != "*").cloned());
    Some(base)
}

/// The file module an absolute path lands in: its longest prefix that is a file, looked
/// through facades' re-exports.
fn resolve(
    path: &ModPath,
    files: &BTreeMap<ModPath, usize>,
    reexports: &BTreeMap<ModPath, BTreeMap<String, ModPath>>,
) -> Option<ModPath> {
    let mut path = path.clone();
    for _ in 0..8 {
        let prefix = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| files.contains_key(p))?;
        // An item the module re-exports: follow it to where it is defined.
        let next = path.get(prefix.len());
        match next.and_then(|name| reexports.get(&prefix)?.get(name)) {
            Some(target) => {
                let mut followed = absolute(&prefix, target).unwrap_or_else(|| {
                    let mut p = prefix.clone();
                    p.extend(target.iter().cloned());
                    p
                });
                followed.extend(path[prefix.len() + 1..].iter().cloned());
                if followed == path {
                    return Some(prefix);
                }
                path = followed;
            }
            None => return Some(prefix),
        }
    }
    None
}

/// The cycles of a graph: for each strongly connected component of more than one node,
/// one cycle through it, as its edges.
fn cycles(n: usize, edges: &BTreeMap<(usize, usize), Site>) -> Vec<Vec<(usize, usize)>> {
    let mut adjacent = vec![BTreeSet::new(); n];
    for &(a, b) in edges.keys() {
        adjacent[a].insert(b);
    }
    let components = components(&adjacent);
    let mut out = Vec::new();
    for component in components.into_iter().filter(|c| c.len() > 1) {
        if component.len() > 2 {
            eprintln!(
                "  (a knot of {} files; one cycle through it below)",
                component.len()
            );
        }
        let inside: BTreeSet<usize> = component.iter().copied().collect();
        // Walk inside the component from its first node until a node repeats.
        let mut walk = vec![component[0]];
        let mut seen = BTreeMap::from([(component[0], 0usize)]);
        loop {
            let here = *walk.last().unwrap_or(&component[0]);
            let Some(&next) = adjacent[here].iter().find(|b| inside.contains(b)) else {
                break;
            };
            if let Some(&at) = seen.get(&next) {
                let mut cycle: Vec<(usize, usize)> =
                    walk[at..].windows(2).map(|w| (w[0], w[1])).collect();
                cycle.push((here, next));
                out.push(cycle);
                break;
            }
            seen.insert(next, walk.len());
            walk.push(next);
        }
    }
    out
}

/// Tarjan's strongly connected components (iterative).
fn components(adjacent: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    let n = adjacent.len();
    let (mut index, mut low) = (vec![usize::MAX; n], vec![0; n]);
    let (mut on_stack, mut stack, mut out) = (vec![false; n], Vec::new(), Vec::new());
    let mut next_index = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>)> = Vec::new();
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        work.push((root, adjacent[root].iter().copied().collect()));
        while let Some((v, pending)) = work.last_mut() {
            let v = *v;
            if let Some(w) = pending.pop() {
                if index[w] == usize::MAX {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, adjacent[w].iter().copied().collect()));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _)) = work.last() {
                low[*parent] = low[*parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out
}

/// Plants a cycle behind a re-export in a scratch crate: it must be found; without it the
/// crate must pass.
fn self_test() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("layers-self-test-{}", std::process::id()));
    let src = dir.join("src");
    let write = |name: &str, text: &str| {
        let path = src.join(name);
        fs::create_dir_all(path.parent().unwrap_or(&src)).expect("scratch dir");
        fs::write(path, text).expect("scratch file");
    };
    write(
        "lib.rs",
        "//! root\nmod a;\nmod net;\npub use net::Client;\npub use a::Inner;\n",
    );
    write(
        "a.rs",
        "use crate::{error::E, net::client::Remote};\npub struct Inner;\n",
    );
    write("error.rs", "pub struct E;\n");
    write("net/mod.rs", "pub mod client;\npub use client::Client;\n");
    let clean = "use crate::error::E;\npub struct Client;\npub struct Remote;\n";
    // The cycle goes through two facades: `crate::Inner` is re-exported by lib.rs.
    let planted = "use crate::error::E;\npub struct Client;\npub struct Remote;\n\
                   fn f() -> crate::Inner { crate::Inner }\n";
    write("net/client.rs", clean);
    let passes = check_crate(&src).is_empty();
    write("net/client.rs", planted);
    let found = check_crate(&src);
    let _ = fs::remove_dir_all(&dir);
    let caught = found.len() == 1
        && found[0].len() == 2
        && found[0]
            .iter()
            .any(|(from, _, _)| from.ends_with("net/client.rs"));
    println!("self-test: clean crate passes: {passes}; planted cycle found: {caught}");
    if passes && caught {
        ExitCode::SUCCESS
    } else {
        report(&found, &src);
        ExitCode::FAILURE
    }
}
