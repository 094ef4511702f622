//! Writing a configuration as its commented example file, with its values
//! set: comments, order and untouched values kept (`toml_edit`). The node's
//! `leak-node init` and the client's `leak init` both write this way.

/// `template` (TOML with comments) with each value that differs from
/// `values` replaced, and each key of `values` it lacks added: comments,
/// order and the formatting of unchanged values stay as they are. Values
/// are compared as TOML values, so `100_000` in the template equals
/// `100000`.
pub fn fill(template: &str, values: &toml::Table) -> Result<String, Box<dyn std::error::Error>> {
    let mut document: toml_edit::DocumentMut = template.parse()?;
    let current: toml::Table = toml::from_str(template)?;
    fill_table(document.as_table_mut(), &current, values)?;
    Ok(document.to_string())
}

fn fill_table(
    document: &mut toml_edit::Table,
    current: &toml::Table,
    values: &toml::Table,
) -> Result<(), Box<dyn std::error::Error>> {
    let empty = toml::Table::new();
    for (key, value) in values {
        let was = current.get(key);
        if let toml::Value::Table(values) = value {
            let item = document.entry(key).or_insert_with(toml_edit::table);
            let table = item
                .as_table_mut()
                .ok_or_else(|| format!("{key} is not a table in the template"))?;
            fill_table(
                table,
                was.and_then(toml::Value::as_table).unwrap_or(&empty),
                values,
            )?;
        } else if was != Some(value) {
            let mut new: toml_edit::Value = value.to_string().parse()?;
            match document.get_mut(key) {
                // Replacing the item keeps the key, and with it the comment
                // above; the old value's decor keeps a comment after it.
                Some(item) => {
                    if let Some(old) = item.as_value() {
                        *new.decor_mut() = old.decor().clone();
                    }
                    *item = toml_edit::Item::Value(new);
                }
                None => {
                    document.insert(key, toml_edit::Item::Value(new));
                }
            }
        }
    }
    Ok(())
}
