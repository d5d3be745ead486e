//! The memory timeline of a plan as SVG: each slot a rectangle spanning its live steps (x) and
//! its bytes (y).

use crate::plan::{ExecutionPlan, Placement};
use std::fmt::Write;

pub fn timeline(plan: &ExecutionPlan) -> String {
    let (w, h, margin) = (1000.0f64, 600.0f64, 40.0f64);
    let steps = plan.steps.len().max(1) as f64;
    let bytes = plan.arena_bytes.max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        w + 2.0 * margin,
        h + 2.0 * margin
    );
    let _ = writeln!(
        s,
        r#"<text x="{margin}" y="20">arena {} B, lower bound {} B, {} steps (x: step, y: address)</text>"#,
        plan.arena_bytes,
        plan.lower_bound_bytes,
        plan.steps.len()
    );
    let _ = writeln!(
        s,
        r##"<rect x="{margin}" y="{margin}" width="{w}" height="{h}" fill="none" stroke="#888"/>"##
    );
    for t in &plan.tensors {
        let (Placement::Slot { offset }, Some((birth, death))) = (t.placement, t.live) else {
            continue;
        };
        let x = margin + birth as f64 / steps * w;
        let width = ((death + 1 - birth) as f64 / steps * w).max(1.0);
        let y = margin + offset as f64 / bytes * h;
        let height = (t.bytes as f64 / bytes * h).max(1.0);
        let hue = (t.node * 47) % 360;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="hsl({hue},60%,70%)" stroke="black" stroke-width="0.3"><title>{} {}{} {} B, steps {birth}..={death}</title></rect>"#,
            xml_escape(&t.name),
            t.dtype,
            xml_escape(&t.shape),
            t.bytes
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
