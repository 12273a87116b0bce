//! Prompt templates: `{{name}}` marks a variable (spaces inside the braces allowed; a name
//! is a letter or '_', then letters, digits, '_' or '.'). Anything else, single braces or
//! `{{` not followed by a name and `}}` included, is text.

use std::collections::HashMap;

/// One piece of a template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Variable(&'t str),
}

/// Whether `name` is a variable name.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The pieces of `template`, in order.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut text_start = 0;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let variable = after.find("}}").and_then(|close| {
            let name = after[..close].trim_matches(' ');
            is_name(name).then_some((name, close))
        });
        match variable {
            Some((name, close)) => {
                let start = offset + open;
                if start > text_start {
                    out.push(Piece::Text(&template[text_start..start]));
                }
                out.push(Piece::Variable(name));
                let consumed = open + 2 + close + 2;
                offset += consumed;
                rest = &rest[consumed..];
                text_start = offset;
            }
            None => {
                offset += open + 2;
                rest = &rest[open + 2..];
            }
        }
    }
    if text_start < template.len() {
        out.push(Piece::Text(&template[text_start..]));
    }
    out
}

/// The variables `template` declares, in order of first use.
pub fn variables(template: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for piece in pieces(template) {
        if let Piece::Variable(name) = piece
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// What is wrong with a rendering's variables.
#[derive(Debug, PartialEq, Eq)]
pub enum RenderError {
    /// A declared variable without a value.
    Missing(String),
    /// A value for a variable the template does not declare.
    Undeclared(String),
}

/// `template` with every variable replaced by its value; every declared variable needs a
/// value and every value a declared variable (the first of each fault, by name).
pub fn render(template: &str, values: &HashMap<String, String>) -> Result<String, RenderError> {
    let declared = variables(template);
    if let Some(missing) = declared.iter().find(|n| !values.contains_key(*n)) {
        return Err(RenderError::Missing(missing.clone()));
    }
    let mut undeclared: Vec<&String> = values.keys().filter(|k| !declared.contains(k)).collect();
    undeclared.sort();
    if let Some(name) = undeclared.first() {
        return Err(RenderError::Undeclared((*name).clone()));
    }
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Variable(name) => out.push_str(values.get(name).map_or("", String::as_str)),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn variables_are_found_in_order_once() {
        assert_eq!(
            variables("Hi {{name}}, {{ city }} {x} {{ not a name }} {{name}} {{user.id}}{{"),
            ["name", "city", "user.id"]
        );
        assert!(variables("{{}} {{1x}} {{ }}").is_empty());
    }

    #[test]
    fn rendering_fills_every_variable_and_refuses_strays() {
        let values: HashMap<String, String> = [("name", "Ada"), ("city", "{{name}}")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // A value is never expanded again.
        assert_eq!(
            render("{{name}} in {{ city }}, {not} {{", &values).unwrap(),
            "Ada in {{name}}, {not} {{"
        );
        assert_eq!(
            render("{{name}} {{day}}", &values),
            Err(RenderError::Missing("day".into()))
        );
        assert_eq!(
            render("{{name}}", &values),
            Err(RenderError::Undeclared("city".into()))
        );
        assert_eq!(
            render("é{{ name }}é", &HashMap::new()),
            Err(RenderError::Missing("name".into()))
        );
    }
}
