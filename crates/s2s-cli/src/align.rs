//! `s2s align`: one attention matrix written by `s2s decode --alignments` drawn as a PNG
//! heatmap, source tokens across the top, output tokens down the left side.

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// JSON lines written by `s2s decode --alignments FILE`.
    #[arg(long)]
    pub alignments: PathBuf,
    /// Which input to draw: its `index` in the file (the 0-based input line).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// The PNG file to write.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// One record of an alignments file: `attention[i][j]` is the weight of source token `j`
/// when output token `i` was produced.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Alignment {
    pub index: usize,
    pub source: Vec<String>,
    pub output: Vec<String>,
    pub attention: Vec<Vec<f32>>,
}

/// Where the heatmap's cells lie in the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    /// Left edge of the first column of cells.
    pub left: u32,
    /// Top edge of the first row of cells.
    pub top: u32,
    pub cell_w: u32,
    pub cell_h: u32,
}

impl Layout {
    /// The centre pixel of cell (`row` = output step, `col` = source position).
    pub fn center(&self, row: usize, col: usize) -> (u32, u32) {
        (
            self.left + col as u32 * self.cell_w + self.cell_w / 2,
            self.top + row as u32 * self.cell_h + self.cell_h / 2,
        )
    }
}

/// The font of the labels, shipped with the binary so that no system font is needed
/// (DejaVu Sans, Bitstream Vera licence: `assets/DejaVuSans-LICENSE`).
pub(crate) const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) const FONT: &str = "s2s-dejavu-sans";
const FONT_SIZE: f64 = 15.0;
/// Colour of weight 1 (weight 0 is white).
const DARK: (u8, u8, u8) = (8, 48, 107);

/// Registers [`FONT`] with plotters (once per process); every text drawn must name it.
pub(crate) fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if !ok {
        bail!("the built-in label font could not be loaded");
    }
    Ok(())
}

pub fn run(args: AlignArgs) -> Result<()> {
    let alignment = read_alignment(&args.alignments, args.index)?;
    let (rgb, layout) = render(&alignment)?;
    write_png(&args.out, &rgb, layout.width, layout.height)?;
    eprintln!(
        "{}: {} output x {} source tokens ({}x{} px)",
        args.out.display(),
        alignment.output.len(),
        alignment.source.len(),
        layout.width,
        layout.height
    );
    Ok(())
}

/// Reads the record with `index` from an alignments file, checking its shape.
pub fn read_alignment(path: &Path, index: usize) -> Result<Alignment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut records = 0;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        if line.trim().is_empty() {
            bail!("{}: empty line (expected one JSON record per line)", at());
        }
        let a: Alignment = serde_json::from_str(line)
            .with_context(|| format!("{}: not an alignment record", at()))?;
        records += 1;
        if a.index != index {
            continue;
        }
        if a.attention.is_empty() {
            bail!(
                "{}: input {index} has no attention weights (a model without attention, or an \
                 empty output)",
                at()
            );
        }
        if a.attention.len() != a.output.len() {
            bail!(
                "{}: {} attention rows for {} output tokens",
                at(),
                a.attention.len(),
                a.output.len()
            );
        }
        for (i, row) in a.attention.iter().enumerate() {
            if row.len() != a.source.len() {
                bail!(
                    "{}: attention row {i} has {} weights for {} source tokens",
                    at(),
                    row.len(),
                    a.source.len()
                );
            }
            if let Some(w) = row
                .iter()
                .find(|w| !w.is_finite() || **w < 0.0 || **w > 1.0 + 1e-4)
            {
                bail!(
                    "{}: attention row {i} holds {w}, not a weight in [0, 1]",
                    at()
                );
            }
        }
        return Ok(a);
    }
    bail!(
        "{}: no record with index {index} ({records} records)",
        path.display()
    )
}

fn shade(w: f32) -> RGBColor {
    let w = w.clamp(0.0, 1.0);
    let mix = |dark: u8| (255.0 - (255.0 - dark as f32) * w).round() as u8;
    RGBColor(mix(DARK.0), mix(DARK.1), mix(DARK.2))
}

/// Draws the heatmap into an RGB buffer (3 bytes per pixel, rows top to bottom).
pub fn render(a: &Alignment) -> Result<(Vec<u8>, Layout)> {
    register_font()?;
    let font: FontDesc = (FONT, FONT_SIZE).into_font();
    let width_of = |s: &str| -> Result<u32> {
        let ((x0, _), (x1, _)) = font
            .layout_box(s)
            .map_err(|e| anyhow::anyhow!("cannot lay out label {s:?}: {e:?}"))?;
        Ok((x1 - x0).max(0) as u32)
    };
    let mut widest_source = 0;
    for s in &a.source {
        widest_source = widest_source.max(width_of(s)?);
    }
    let mut widest_output = 0;
    for s in &a.output {
        widest_output = widest_output.max(width_of(s)?);
    }
    let cell_h = 24;
    let cell_w = 24;
    let margin = 10;
    // Source labels are written upwards above their column, output labels left of their row.
    let layout = Layout {
        left: margin + widest_output + 8,
        top: margin + widest_source + 8,
        cell_w,
        cell_h,
        width: margin + widest_output + 8 + cell_w * a.source.len() as u32 + margin,
        height: margin + widest_source + 8 + cell_h * a.output.len() as u32 + margin,
    };
    let mut rgb = vec![255u8; layout.width as usize * layout.height as usize * 3];
    {
        let root =
            BitMapBackend::with_buffer(&mut rgb, (layout.width, layout.height)).into_drawing_area();
        let draw_err = |e| anyhow::anyhow!("drawing the heatmap failed: {e:?}");
        for (i, row) in a.attention.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let x = (layout.left + j as u32 * cell_w) as i32;
                let y = (layout.top + i as u32 * cell_h) as i32;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w as i32, y + cell_h as i32)],
                    shade(w).filled(),
                ))
                .map_err(draw_err)?;
            }
        }
        let grid = RGBColor(200, 200, 200);
        let (l, t) = (layout.left as i32, layout.top as i32);
        let (r, b) = (
            l + (cell_w * a.source.len() as u32) as i32,
            t + (cell_h * a.output.len() as u32) as i32,
        );
        root.draw(&Rectangle::new([(l, t), (r, b)], grid))
            .map_err(draw_err)?;
        let black = TextStyle::from(font.clone()).color(&BLACK);
        let right = black.pos(Pos::new(HPos::Right, VPos::Center));
        for (i, s) in a.output.iter().enumerate() {
            let (_, y) = layout.center(i, 0);
            root.draw(&Text::new(s.as_str(), (l - 6, y as i32), right.clone()))
                .map_err(draw_err)?;
        }
        let up = TextStyle::from(font.transform(FontTransform::Rotate270))
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (j, s) in a.source.iter().enumerate() {
            let (x, _) = layout.center(0, j);
            root.draw(&Text::new(s.as_str(), (x as i32, t - 6), up.clone()))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok((rgb, layout))
}

/// Writes an RGB buffer as a PNG file, through a temporary file so that a failed run leaves
/// no half-written image.
pub fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let tmp = path.with_extension("png.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let result = (|| -> Result<()> {
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("{}: write failed", tmp.display())));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(rgb: &[u8], layout: Layout, (x, y): (u32, u32)) -> (u8, u8, u8) {
        let i = (y as usize * layout.width as usize + x as usize) * 3;
        (rgb[i], rgb[i + 1], rgb[i + 2])
    }

    #[test]
    fn cells_are_shaded_by_weight() {
        let a = Alignment {
            index: 0,
            source: vec!["le".into(), "chat".into(), "noir".into()],
            output: vec!["the".into(), "black".into(), "cat".into(), "<eos>".into()],
            attention: vec![
                vec![1.0, 0.0, 0.0],
                vec![0.0, 0.25, 0.75],
                vec![0.0, 1.0, 0.0],
                vec![0.5, 0.5, 0.0],
            ],
        };
        let (rgb, layout) = render(&a).unwrap();
        assert_eq!(rgb.len(), (layout.width * layout.height * 3) as usize);
        for (i, row) in a.attention.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let c = shade(w);
                assert_eq!(pixel(&rgb, layout, layout.center(i, j)), (c.0, c.1, c.2));
            }
        }
        // Labels are drawn: some dark pixels left of the grid and above it.
        let dark = |x: u32, y: u32| pixel(&rgb, layout, (x, y)).0 < 128;
        assert!((0..layout.left).any(|x| (layout.top..layout.height).any(|y| dark(x, y))));
        assert!((0..layout.top).any(|y| (layout.left..layout.width).any(|x| dark(x, y))));
    }

    #[test]
    fn writes_a_png_and_reports_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jsonl");
        std::fs::write(
            &file,
            "{\"index\":0,\"source\":[\"a\",\"b\"],\"output\":[\"x\"],\"attention\":[[0.3,0.7]]}\n\
             {\"index\":1,\"source\":[\"a\"],\"output\":[\"x\",\"y\"],\"attention\":[[1.0]]}\n\
             {\"index\":2,\"source\":[\"a\"],\"output\":[\"x\"],\"attention\":[[2.0]]}\n\
             not json\n",
        )
        .unwrap();
        let out = dir.path().join("a.png");
        run(AlignArgs {
            alignments: file.clone(),
            index: 0,
            out: out.clone(),
        })
        .unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert!(reader.info().width > 48 && reader.info().height > 24);
        let err = |index| format!("{:#}", read_alignment(&file, index).unwrap_err());
        assert!(
            err(1).contains("a.jsonl:2: 1 attention rows for 2 output tokens"),
            "{}",
            err(1)
        );
        assert!(
            err(2).contains("a.jsonl:3: attention row 0 holds 2"),
            "{}",
            err(2)
        );
        assert!(
            err(3).contains("a.jsonl:4: not an alignment record"),
            "{}",
            err(3)
        );
        let missing = format!(
            "{:#}",
            read_alignment(&dir.path().join("none"), 0).unwrap_err()
        );
        assert!(missing.contains("none: cannot read"), "{missing}");
    }
}
