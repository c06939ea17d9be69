//! Parser for Elasticsearch's `simple_query_string` syntax.
//!
//! A port of Lucene's `SimpleQueryParser` with every flag enabled: `+` (AND), `|` (OR), `-` (NOT),
//! `"` (phrase), `*` (prefix), `(`/`)` (precedence), `~N` (fuzziness or phrase slop), whitespace and
//! `\` (escape). It never fails; malformed input degrades exactly as Lucene does: an unclosed `"` or
//! `(` is ignored and the rest is parsed as terms, a stray `)` is ignored, operators with nothing to
//! their left are ignored, and an empty `""` or `()` is dropped.
//!
//! Operators apply strictly left to right (no AND-over-OR precedence): each time the operator changes,
//! the query built so far is wrapped as the single clause of a new boolean, so `a | b + c` is
//! `(a | b) + c` and `a + b | c` is `(a + b) | c`. Only the first of consecutive operators counts.
//!
//! Negation follows Lucene/ES 8: `-x` is "every document except x", represented here as a
//! [`SimpleQuery::Bool`] holding only `must_not: [x]`, which has Elasticsearch `bool` semantics
//! (a bool without positive clauses matches all documents minus the excluded ones). So under the
//! default OR, `foo -bar` is `should: [foo, {must_not: [bar]}]` and matches documents containing
//! `foo` OR not containing `bar`. Under AND (or with an explicit `+`) the negation is flattened:
//! `foo -bar` becomes `must: [foo], must_not: [bar]`. Two `-` cancel out; a `-` followed by
//! whitespace is ignored.
//!
//! The text is kept raw: the caller analyzes it. A clause whose text analyzes to no tokens should be
//! dropped by the caller (Lucene drops it). An input without any clause parses to `Text("")`, which
//! should match no documents (Lucene returns `MatchNoDocsQuery`).
//!
//! Deviations from Lucene: after a phrase slop (`"a b"~2`) the following character is not skipped
//! (Lucene swallows it, which can eat an operator), and groups nested deeper than
//! [`MAX_GROUP_DEPTH`] are flattened (their parentheses are ignored) so input cannot overflow the stack.

/// A parsed `simple_query_string` query, to be lowered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimpleQuery {
    /// A single analyzed term or words (the caller analyzes text).
    Text(String),
    /// `"quoted phrase"`, with optional `~N` slop (0 without).
    Phrase {
        /// The raw phrase text between the quotes, with escapes removed.
        text: String,
        /// Allowed word-position slop.
        slop: u32,
    },
    /// `term*` prefix query; holds the text without the trailing `*`.
    Prefix(String),
    /// `term~N` fuzzy query: `~` alone means 2, distances are capped at 2, and `~0` yields a `Text`.
    Fuzzy {
        /// The raw term before the `~`.
        term: String,
        /// Maximum edit distance (1 or 2).
        distance: u8,
    },
    /// Boolean combination with Elasticsearch `bool` semantics. Clauses of one bool always share
    /// one operator: either only `should`, or `must` plus `must_not`, or only `must_not` (negation).
    Bool {
        /// Clauses that must all match.
        must: Vec<SimpleQuery>,
        /// Clauses of which at least one must match.
        should: Vec<SimpleQuery>,
        /// Clauses that must not match.
        must_not: Vec<SimpleQuery>,
    },
}

/// Groups nested deeper than this are flattened rather than parsed recursively.
pub const MAX_GROUP_DEPTH: usize = 32;

/// Lucene's `LevenshteinAutomata.MAXIMUM_SUPPORTED_DISTANCE`.
const MAX_EDIT_DISTANCE: i32 = 2;

/// Parses a `simple_query_string` query. Whitespace-separated clauses are combined with AND when
/// `default_operator_and` is true, with OR otherwise. Never fails; see the module docs.
pub fn parse(query: &str, default_operator_and: bool) -> SimpleQuery {
    let chars: Vec<char> = query.chars().collect();
    let default = if default_operator_and {
        Occur::Must
    } else {
        Occur::Should
    };
    parse_sub(&chars, default, 0).unwrap_or_else(|| SimpleQuery::Text(String::new()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occur {
    Must,
    Should,
}

/// Clauses of a boolean under construction.
#[derive(Default)]
struct Clauses {
    must: Vec<SimpleQuery>,
    should: Vec<SimpleQuery>,
    must_not: Vec<SimpleQuery>,
}

impl Clauses {
    fn add(&mut self, query: SimpleQuery, occur: Occur) {
        match (occur, query) {
            // A pure negation inside a conjunction is the same as its exclusions.
            (
                Occur::Must,
                SimpleQuery::Bool {
                    must,
                    should,
                    must_not,
                },
            ) if must.is_empty() && should.is_empty() && !must_not.is_empty() => {
                self.must_not.extend(must_not);
            }
            (Occur::Must, query) => self.must.push(query),
            (Occur::Should, query) => self.should.push(query),
        }
    }

    fn into_query(self) -> SimpleQuery {
        SimpleQuery::Bool {
            must: self.must,
            should: self.should,
            must_not: self.must_not,
        }
    }
}

/// Parsing state for one level (the whole query or one group), as in Lucene's `State`.
struct State<'a> {
    data: &'a [char],
    index: usize,
    top: Option<SimpleQuery>,
    current: Option<Occur>,
    previous: Option<Occur>,
    negated: bool,
    default: Occur,
    depth: usize,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn token_finished(c: char) -> bool {
    matches!(c, '"' | '|' | '+' | '(' | ')') || is_whitespace(c)
}

fn parse_sub(data: &[char], default: Occur, depth: usize) -> Option<SimpleQuery> {
    let mut state = State {
        data,
        index: 0,
        top: None,
        current: None,
        previous: None,
        negated: false,
        default,
        depth,
    };
    while state.index < data.len() {
        match data[state.index] {
            '(' => state.consume_group(),
            ')' => state.index += 1,
            '"' => state.consume_phrase(),
            '+' => state.set_operator(Occur::Must),
            '|' => state.set_operator(Occur::Should),
            '-' => {
                state.negated = !state.negated;
                state.index += 1;
                continue;
            }
            c if is_whitespace(c) => state.index += 1,
            _ => state.consume_token(),
        }
        // Even whitespace between `-` and its operand cancels the negation.
        state.negated = false;
    }
    state.top
}

impl State<'_> {
    fn set_operator(&mut self, occur: Occur) {
        if self.current.is_none() && self.top.is_some() {
            self.current = Some(occur);
        }
        self.index += 1;
    }

    fn consume_group(&mut self) {
        self.index += 1;
        if self.depth >= MAX_GROUP_DEPTH {
            return; // too deep: ignore the `(`, its `)` will be ignored as stray
        }
        let start = self.index;
        let mut open = 1usize;
        let mut escaped = false;
        while self.index < self.data.len() {
            let c = self.data[self.index];
            if !escaped {
                if c == '\\' {
                    escaped = true;
                    self.index += 1;
                    continue;
                } else if c == '(' {
                    open += 1;
                } else if c == ')' {
                    open -= 1;
                    if open == 0 {
                        break;
                    }
                }
            }
            escaped = false;
            self.index += 1;
        }
        if self.index == self.data.len() {
            self.index = start; // unclosed: the `(` is ignored
        } else if self.index == start {
            self.current = None; // `()`: drop it and the operator meant for it
            self.index += 1;
        } else {
            let sub = parse_sub(&self.data[start..self.index], self.default, self.depth + 1);
            self.build(sub);
            self.index += 1;
        }
    }

    fn consume_phrase(&mut self) {
        self.index += 1;
        let start = self.index;
        let len = self.data.len();
        let mut text = String::new();
        let mut escaped = false;
        let mut has_slop = false;
        while self.index < len {
            let c = self.data[self.index];
            if !escaped {
                if c == '\\' {
                    escaped = true;
                    self.index += 1;
                    continue;
                } else if c == '"' {
                    if self.data.get(self.index + 1) == Some(&'~') {
                        self.index += 1;
                        has_slop = self.index + 1 < len;
                    }
                    break;
                }
            }
            escaped = false;
            text.push(c);
            self.index += 1;
        }
        if self.index == len {
            self.index = start; // unclosed: the `"` is ignored
        } else if self.index == start {
            self.current = None; // `""`: drop it and the operator meant for it
            self.index += 1;
        } else {
            let slop = if has_slop {
                // Leaves the index on the character ending the slop.
                u32::try_from(self.parse_fuzziness()).unwrap_or(0)
            } else {
                self.index += 1;
                0
            };
            if !text.is_empty() {
                self.build(Some(SimpleQuery::Phrase { text, slop }));
            }
        }
    }

    fn consume_token(&mut self) {
        let mut token = String::new();
        let mut escaped = false;
        let mut prefix = false;
        let mut fuzzy = false;
        while self.index < self.data.len() {
            let c = self.data[self.index];
            if !escaped {
                if c == '\\' {
                    escaped = true;
                    prefix = false;
                    self.index += 1;
                    continue;
                } else if token_finished(c) {
                    break;
                } else if !token.is_empty() && c == '~' {
                    fuzzy = true;
                    break;
                }
                prefix = !token.is_empty() && c == '*';
            }
            escaped = false;
            token.push(c);
            self.index += 1;
        }
        if token.is_empty() {
            return;
        }
        let branch = if fuzzy {
            let distance = self.parse_fuzziness().min(MAX_EDIT_DISTANCE);
            match u8::try_from(distance) {
                Ok(distance) if distance > 0 => SimpleQuery::Fuzzy {
                    term: token,
                    distance,
                },
                _ => SimpleQuery::Text(token),
            }
        } else if prefix {
            token.pop();
            SimpleQuery::Prefix(token)
        } else {
            SimpleQuery::Text(token)
        };
        self.build(Some(branch));
    }

    /// Reads `~N` at the index up to the end of the token: empty is 2, unparsable or negative is 0.
    fn parse_fuzziness(&mut self) -> i32 {
        if self.data.get(self.index) != Some(&'~') {
            return 0;
        }
        self.index += 1;
        let mut text = String::new();
        while self.index < self.data.len() && !token_finished(self.data[self.index]) {
            text.push(self.data[self.index]);
            self.index += 1;
        }
        if text.is_empty() {
            2
        } else {
            text.parse::<i32>().map_or(0, |n| n.max(0))
        }
    }

    /// Lucene's `buildQueryTree`: adds a clause, wrapping the tree whenever the operator changes.
    fn build(&mut self, branch: Option<SimpleQuery>) {
        let Some(mut branch) = branch else { return };
        if self.negated {
            branch = SimpleQuery::Bool {
                must: Vec::new(),
                should: Vec::new(),
                must_not: vec![branch],
            };
        }
        self.top = Some(match self.top.take() {
            None => branch,
            Some(top) => {
                let occur = self.current.unwrap_or(self.default);
                let mut clauses = match top {
                    SimpleQuery::Bool {
                        must,
                        should,
                        must_not,
                    } if self.previous == Some(occur) => Clauses {
                        must,
                        should,
                        must_not,
                    },
                    other => {
                        let mut clauses = Clauses::default();
                        clauses.add(other, occur);
                        clauses
                    }
                };
                clauses.add(branch, occur);
                self.previous = Some(occur);
                clauses.into_query()
            }
        });
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::SimpleQuery::{Fuzzy, Phrase, Prefix};
    use super::*;

    fn t(s: &str) -> SimpleQuery {
        SimpleQuery::Text(s.to_string())
    }

    fn b(must: Vec<SimpleQuery>, should: Vec<SimpleQuery>, must_not: Vec<SimpleQuery>) -> SimpleQuery {
        SimpleQuery::Bool {
            must,
            should,
            must_not,
        }
    }

    fn or(should: Vec<SimpleQuery>) -> SimpleQuery {
        b(vec![], should, vec![])
    }

    fn and(must: Vec<SimpleQuery>) -> SimpleQuery {
        b(must, vec![], vec![])
    }

    fn not(q: SimpleQuery) -> SimpleQuery {
        b(vec![], vec![], vec![q])
    }

    #[test]
    fn plain_words() {
        assert_eq!(parse("foo", false), t("foo"));
        assert_eq!(
            parse("  foo \t bar\nbaz ", false),
            or(vec![t("foo"), t("bar"), t("baz")])
        );
        assert_eq!(
            parse("foo-bar f*o ~x", false),
            or(vec![t("foo-bar"), t("f*o"), t("~x")])
        );
        assert_eq!(parse(r"foo\+bar a\ b\", false), or(vec![t("foo+bar"), t("a b")]));
    }

    #[test]
    fn and_or_left_to_right() {
        assert_eq!(parse("foo + bar", false), and(vec![t("foo"), t("bar")]));
        assert_eq!(parse("foo|bar", true), or(vec![t("foo"), t("bar")]));
        assert_eq!(
            parse("a + b | c", false),
            or(vec![and(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(
            parse("a | b + c", false),
            and(vec![or(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(
            parse("a b +c", false),
            and(vec![or(vec![t("a"), t("b")]), t("c")])
        );
        // Only the first of consecutive operators counts; a leading operator is ignored.
        assert_eq!(parse("+a +| b", false), and(vec![t("a"), t("b")]));
    }

    #[test]
    fn negation() {
        assert_eq!(parse("-foo", false), not(t("foo")));
        assert_eq!(parse("--foo", false), t("foo"));
        assert_eq!(parse("- foo", false), t("foo"));
        assert_eq!(parse("foo -bar", false), or(vec![t("foo"), not(t("bar"))]));
        assert_eq!(parse("foo -bar", true), b(vec![t("foo")], vec![], vec![t("bar")]));
        assert_eq!(
            parse("foo +-bar -baz", true),
            b(vec![t("foo")], vec![], vec![t("bar"), t("baz")])
        );
        assert_eq!(parse("-a +-b", false), b(vec![], vec![], vec![t("a"), t("b")]));
        assert_eq!(parse("-(a b)", false), not(or(vec![t("a"), t("b")])));
    }

    #[test]
    fn phrases() {
        let phrase = |text: &str, slop| Phrase {
            text: text.to_string(),
            slop,
        };
        assert_eq!(parse("\"quick fox\"", false), phrase("quick fox", 0));
        assert_eq!(parse("\"quick fox\"~3", false), phrase("quick fox", 3));
        assert_eq!(parse("\"a b\"~", false), phrase("a b", 0));
        assert_eq!(parse("\"a b\"~ c", false), or(vec![phrase("a b", 2), t("c")]));
        assert_eq!(parse("\"a b\"~x", false), phrase("a b", 0));
        assert_eq!(parse("\"a b\"~2|c", true), or(vec![phrase("a b", 2), t("c")]));
        assert_eq!(
            parse(r#"x"say \"hi\""y"#, false),
            or(vec![t("x"), phrase("say \"hi\"", 0), t("y")])
        );
    }

    #[test]
    fn prefix() {
        assert_eq!(parse("qui*", false), Prefix("qui".to_string()));
        assert_eq!(
            parse("qui** *", false),
            or(vec![Prefix("qui*".to_string()), t("*")])
        );
        assert_eq!(parse(r"qui\*", false), t("qui*"));
    }

    #[test]
    fn fuzzy() {
        let fz = |term: &str, distance| Fuzzy {
            term: term.to_string(),
            distance,
        };
        assert_eq!(parse("foo~", false), fz("foo", 2));
        assert_eq!(parse("foo~1 bar~9", false), or(vec![fz("foo", 1), fz("bar", 2)]));
        assert_eq!(parse("foo~0", false), t("foo"));
        assert_eq!(parse("foo~x", false), t("foo"));
        assert_eq!(parse("foo~1+bar", false), and(vec![fz("foo", 1), t("bar")]));
    }

    #[test]
    fn groups() {
        assert_eq!(
            parse("(a | b) + c", false),
            and(vec![or(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(
            parse("a + (b | c)", false),
            and(vec![t("a"), or(vec![t("b"), t("c")])])
        );
        assert_eq!(parse("((a))", false), t("a"));
        assert_eq!(
            parse("a (b (c d))", true),
            and(vec![t("a"), and(vec![t("b"), and(vec![t("c"), t("d")])])])
        );
    }

    #[test]
    fn default_and() {
        assert_eq!(parse("foo bar", true), and(vec![t("foo"), t("bar")]));
        assert_eq!(
            parse("foo bar | baz", true),
            or(vec![and(vec![t("foo"), t("bar")]), t("baz")])
        );
    }

    #[test]
    fn unbalanced_and_empty() {
        assert_eq!(parse("\"foo bar", false), or(vec![t("foo"), t("bar")]));
        assert_eq!(parse("-\"foo", false), t("foo"));
        assert_eq!(parse("(foo bar", false), or(vec![t("foo"), t("bar")]));
        assert_eq!(parse("foo) )", false), t("foo"));
        assert_eq!(parse("a + () b", false), or(vec![t("a"), t("b")]));
        assert_eq!(parse("a + \"\" b", false), or(vec![t("a"), t("b")]));
        assert_eq!(parse("", false), t(""));
        assert_eq!(parse(" + | - ( ) ", true), t(""));
        let deep = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(parse(&deep, false), t("a"));
    }
}
