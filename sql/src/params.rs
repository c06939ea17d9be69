//! Statements with parameters, as Flight SQL prepared statements use them:
//! JDBC/ADBC-style `?` markers are numbered `$1`, `$2`, ... (DataFusion's
//! positional placeholders), the statement is planned once with its
//! parameter types inferred, and each execution binds values.

use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;

use crate::{Result, check_fulltext_absorbed, check_read_only};

/// Rewrites every `?` outside string literals, quoted identifiers and
/// comments into `$1`, `$2`, ... in order.
pub fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut n = 0;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // A doubled quote inside stays inside: the loop sees it as
                // the end and the start of the same quoted run.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = '\0';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Plans a statement that may hold parameters, without optimizing it (the
/// optimizer needs the values).
pub async fn prepare(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let plan = ctx.state().create_logical_plan(&number_placeholders(sql)).await?;
    check_read_only(&plan)?;
    Ok(plan)
}

/// Binds parameter values (`$1` is the first) to a prepared plan and
/// optimizes it for execution.
pub fn bind(ctx: &SessionContext, plan: &LogicalPlan, values: Vec<ScalarValue>) -> Result<LogicalPlan> {
    let bound = plan.clone().with_param_values(ParamValues::from(values))?;
    let optimized = ctx.state().optimize(&bound)?;
    check_fulltext_absorbed(&optimized)?;
    Ok(optimized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_numbered_outside_quotes_and_comments() {
        assert_eq!(
            number_placeholders(
                "SELECT a FROM t WHERE b = ? AND c = '?' AND \"d?\" > ? -- ?\n/* ? */ OR e = ?"
            ),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND \"d?\" > $2 -- ?\n/* ? */ OR e = $3"
        );
        assert_eq!(number_placeholders("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
    }
}
