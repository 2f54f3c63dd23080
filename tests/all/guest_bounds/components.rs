//! Components derived from the chaos test program for the bounds tests: the same program
//! with `describe`'s version bytes overwritten, or with extra core instances, each with a
//! memory of its own, appended (a Rust guest cannot have several memories). Written by hand
//! from the binary format, a few dozen bytes, rather than with a wasm encoder.

/// The chaos component with `describe`'s version replaced by `version` (padded with dots to
/// the length of the slot the program keeps for it).
pub fn with_version(version: &str) -> Vec<u8> {
    const SLOT: &[u8] = b"chaos-describe-version-slot-0000";
    let mut bytes = std::fs::read(weir_test_artifacts::CHAOS).unwrap();
    let at: Vec<usize> = bytes
        .windows(SLOT.len())
        .enumerate()
        .filter(|(_, w)| *w == SLOT)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the version slot appears once in the component"
    );
    let mut new = version.as_bytes().to_vec();
    assert!(new.len() <= SLOT.len());
    new.resize(SLOT.len(), b'.');
    bytes[at[0]..at[0] + SLOT.len()].copy_from_slice(&new);
    bytes
}

/// The chaos component with `count` more core instances at its end, each of a module that
/// defines one linear memory of `bytes` (a Rust guest cannot have several memories; the
/// component model lets a component instantiate any module it defines). Every instance is
/// created when the component is, before any export is called.
pub fn with_memories(count: u32, bytes: u32) -> Vec<u8> {
    let mut component = std::fs::read(weir_test_artifacts::CHAOS).unwrap();
    assert_eq!(&component[..8], b"\0asm\x0d\x00\x01\x00", "a component");
    // The new module's index: after every module the component defines at its top level.
    let modules = top_level_sections(&component)
        .filter(|&id| id == CORE_MODULE_SECTION)
        .count() as u32;

    // (module (memory <pages>)): the header and a memory section of one memory.
    let mut memory = vec![1, 0x00];
    leb(&mut memory, bytes / 65536);
    let mut module = b"\0asm\x01\x00\x00\x00".to_vec();
    section(&mut module, 5, &memory);
    section(&mut component, CORE_MODULE_SECTION, &module);

    // `count` instances of it, with no imports.
    let mut instances = Vec::new();
    leb(&mut instances, count);
    for _ in 0..count {
        instances.push(0x00);
        leb(&mut instances, modules);
        instances.push(0);
    }
    section(&mut component, CORE_INSTANCE_SECTION, &instances);
    component
}

/// A component's core-module section id.
const CORE_MODULE_SECTION: u8 = 1;
/// A component's core-instance section id.
const CORE_INSTANCE_SECTION: u8 = 2;

/// The ids of a component's top-level sections, in order.
fn top_level_sections(component: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut at = 8;
    std::iter::from_fn(move || {
        let id = *component.get(at)?;
        let (size, len) = read_leb(&component[at + 1..]);
        at += 1 + len + size as usize;
        Some(id)
    })
}

fn section(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    out.push(id);
    leb(out, payload.len() as u32);
    out.extend_from_slice(payload);
}

fn leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An unsigned LEB128 value and how many bytes it took.
fn read_leb(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("a malformed LEB128 value");
}
