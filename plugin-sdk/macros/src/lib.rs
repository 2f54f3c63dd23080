//! `#[weir_sdk::stage]`: put on `impl Stage for MyStage { ... }`, it adds the phases the impl
//! implements (`on_request`, `on_response`, `on_response_chunk`) to what `info()` says, so a
//! phase cannot be implemented and silently never called because `info()` forgot to list it.
//!
//! No parser dependency: the impl's top-level items are scanned for `fn NAME` (a function
//! nested in a method body sits in that body's braces, which are not scanned).

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

/// The phase of each method name, as the `Phases` constant it sets.
const PHASES: &[(&str, &str)] = &[
    ("on_request", "REQUEST"),
    ("on_response", "RESPONSE"),
    ("on_response_chunk", "RESPONSE_CHUNK"),
];

/// See the crate docs. The attribute takes no arguments.
#[proc_macro_attribute]
pub fn stage(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return error("#[weir_sdk::stage] takes no arguments");
    }
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let is_impl = tokens
        .iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "impl"));
    let body = match tokens.last() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace && is_impl => g.clone(),
        _ => return error("#[weir_sdk::stage] goes on `impl Stage for YourStage { ... }`"),
    };
    let mut implemented = Vec::new();
    let mut previous_fn = false;
    for token in body.stream() {
        if let TokenTree::Ident(ident) = &token {
            let name = ident.to_string();
            if previous_fn && let Some((_, phase)) = PHASES.iter().find(|(m, _)| *m == name) {
                implemented.push(*phase);
            }
            previous_fn = name == "fn";
        } else {
            previous_fn = false;
        }
    }
    // `union` because `|` is not `const`.
    let phases: String = implemented
        .iter()
        .map(|p| format!(".union(::weir_sdk::Phases::{p})"))
        .collect();
    let phases = format!("::weir_sdk::Phases::empty(){phases}");
    let added: TokenStream = format!(
        "#[doc(hidden)] const IMPLEMENTED_PHASES: ::core::option::Option<::weir_sdk::Phases> = \
         ::core::option::Option::Some({phases});"
    )
    .parse()
    .unwrap_or_default();
    let mut stream = body.stream();
    stream.extend(added);
    let mut group = Group::new(Delimiter::Brace, stream);
    group.set_span(body.span());
    if let Some(last) = tokens.last_mut() {
        *last = TokenTree::Group(group);
    }
    tokens.into_iter().collect()
}

/// `compile_error!(message)`.
fn error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .unwrap_or_default()
}
