//! The names the JS side of a worker already uses, from `proxy-fetch/js/names.json`: the one
//! list that this macro and the build both read (the JS runtime's wrapper classes, the main
//! module's own bindings, JS reserved words, proxy-fetch's own classes).

// `js/names.json` is a link to `proxy-fetch/js/names.json` inside this package: `cargo package`
// stores its content, so the packaged crate carries the list it reads.
const NAMES_JSON: &str = include_str!("../js/names.json");

pub struct Names {
    /// RPC method names refused on every entrypoint and Durable Object.
    pub methods: Vec<String>,
    pub method_prefixes: Vec<String>,
    /// Names a worker's main module cannot export (entrypoint and Durable Object classes).
    pub exports: Vec<String>,
    pub export_infixes: Vec<String>,
    /// Classes proxy-fetch itself exports: taken in every worker but proxy-fetch's own code.
    pub system_exports: Vec<String>,
}

impl Names {
    pub fn load() -> Result<Names, String> {
        let entries = parse_object(NAMES_JSON)?;
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("proxy-fetch/js/names.json has no `{key}`"))
        };
        Ok(Names {
            methods: get("methods")?,
            method_prefixes: get("methodPrefixes")?,
            exports: get("exports")?,
            export_infixes: get("exportInfixes")?,
            system_exports: get("systemExports")?,
        })
    }
}

/// Parses the subset of JSON that names.json uses: one object whose values are strings or
/// arrays of strings (a plain string value is kept as a one-element list).
fn parse_object(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut p = Parser {
        chars: text.chars().peekable(),
    };
    let mut out = Vec::new();
    p.expect('{')?;
    loop {
        let key = p.string()?;
        p.expect(':')?;
        let value = if p.peek() == Some('[') {
            p.expect('[')?;
            let mut items = Vec::new();
            if p.peek() == Some(']') {
                p.expect(']')?;
            } else {
                loop {
                    items.push(p.string()?);
                    match p.next() {
                        Some(',') => continue,
                        Some(']') => break,
                        other => {
                            return Err(format!("names.json: expected `,` or `]`, found {other:?}"))
                        }
                    }
                }
            }
            items
        } else {
            vec![p.string()?]
        };
        out.push((key, value));
        match p.next() {
            Some(',') => continue,
            Some('}') => return Ok(out),
            other => return Err(format!("names.json: expected `,` or `}}`, found {other:?}")),
        }
    }
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.next()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(found) if found == c => Ok(()),
            other => Err(format!("names.json: expected `{c}`, found {other:?}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut s = String::new();
        loop {
            match self.chars.next() {
                Some('"') => return Ok(s),
                Some('\\') => match self.chars.next() {
                    Some(c) => s.push(c),
                    None => return Err("names.json: unterminated string".into()),
                },
                Some(c) => s.push(c),
                None => return Err("names.json: unterminated string".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_json_parses() {
        let names = super::Names::load().unwrap();
        assert!(names.methods.iter().any(|m| m == "then"));
        assert!(names.exports.iter().any(|m| m == "class"));
    }
}
