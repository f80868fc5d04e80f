//! An SVG chart of an emulation: delivered throughput over time, drops as bars, and the
//! scheduled events as labelled vertical lines. Plain SVG, no dependencies: any browser
//! opens it.

use std::fmt::Write;

use super::report::Report;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Renders the report's time series.
pub fn svg(report: &Report, title: &str) -> String {
    let end_ms = report.samples.last().map_or(1, |s| s.at_ms).max(1) as f64;
    let max_mbit = report
        .samples
        .iter()
        .map(|s| s.mbit_per_s)
        .fold(1.0, f64::max)
        * 1.15;
    let max_drops = report
        .samples
        .iter()
        .map(|s| s.drops.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |ms: f64| LEFT + ms / end_ms * plot_w;
    let y = |mbit: f64| TOP + plot_h - mbit / max_mbit * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{title}</text>
"#
    );
    // Axes and grid.
    for i in 0..=5 {
        let v = max_mbit * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y0:.1}" y2="{y0:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            y0 = y(v)
        );
    }
    let seconds = (end_ms / 1000.0).ceil() as u64;
    for sec in 0..=seconds {
        let px = x(sec as f64 * 1000.0);
        if px <= WIDTH - RIGHT + 0.5 {
            let _ = writeln!(
                s,
                r#"<text x="{px:.1}" y="{}" text-anchor="middle">{sec} s</text>"#,
                HEIGHT - BOTTOM + 18.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">delivered Mbit/s</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // Drops: red bars from the bottom, scaled to a quarter of the plot.
    for sample in &report.samples {
        let drops = sample.drops.values().sum::<u64>() as f64;
        if drops > 0.0 {
            let h = drops / max_drops * plot_h / 4.0;
            let w = (plot_w / report.samples.len().max(1) as f64).max(2.0);
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{h:.1}" fill="#d62728" opacity="0.8"><title>{} drops at {} ms</title></rect>"##,
                x(sample.at_ms as f64) - w,
                TOP + plot_h - h,
                drops,
                sample.at_ms
            );
        }
    }
    // Throughput line.
    let points: Vec<String> = report
        .samples
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.at_ms as f64), y(p.mbit_per_s)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        points.join(" ")
    );
    // Events.
    for (i, e) in report.events.iter().enumerate() {
        let px = x(e.at_ms as f64);
        let label = match &e.action {
            super::topology::EventAction::LinkDown { link } => {
                format!("link {}-{} down", link[0], link[1])
            }
            super::topology::EventAction::LinkUp { link } => {
                format!("link {}-{} up", link[0], link[1])
            }
            super::topology::EventAction::SwapModule { node, module, .. } => {
                format!("{node}: swap to {module}")
            }
            super::topology::EventAction::Rekey { from, to } => format!("rekey {from}->{to}"),
        };
        let ly = TOP + 14.0 + (i % 3) as f64 * 14.0;
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{ly:.1}" fill="#333">{label}</text>"##,
            TOP + plot_h,
            px + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>
<text x="{LEFT}" y="{}" fill="#1f77b4">— delivered throughput</text><text x="{}" y="{}" fill="#d62728">▮ drops (tallest bar: {} packets)</text>
</svg>"##,
        HEIGHT - 18.0,
        LEFT + 200.0,
        HEIGHT - 18.0,
        max_drops as u64
    );
    s
}
