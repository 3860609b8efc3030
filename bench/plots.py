"""PNG plots of a benchmark run, drawn with gnuplot (Debian package gnuplot-nox)."""
import os
import shutil
import subprocess


def available():
    return shutil.which("gnuplot") is not None


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_data(path, points):
    with open(path, "w") as f:
        for x, y in points:
            f.write(f"{x:.6g} {y:.6g}\n")


def draw(out_dir, name, title, ctx):
    """Draw the scenario's plot into out_dir/<name>.png: the CDFs of its latency distributions
    (baselines dashed, log-scaled latency), else its x/y series. Returns the path, or None when
    the scenario recorded nothing to draw."""
    if ctx.cdfs:
        lines, xlabel, ylabel = ctx.cdfs, "latency (ms, log scale)", "fraction ≤ latency"
        setup = ["set logscale x 10", "set key bottom right", "set yrange [0:1]",
                 "set ytics 0.1", "set grid xtics mxtics ytics"]
    elif ctx.xy:
        xlabel, ylabel, lines = ctx.xy
        setup = ["set key top left", "set grid", "set yrange [0:*]"]
    else:
        return None

    plot = []
    for i, (label, baseline, points) in enumerate(lines):
        data = os.path.join(out_dir, f"{name}-{i}.dat")
        write_data(data, points)
        style = "lw 2 dt 2" if baseline else "lw 2"
        plot.append(f"{quote(data)} using 1:2 with lines {style} title {quote(label)}")
    png = os.path.join(out_dir, f"{name}.png")
    script = "\n".join([
        "set terminal pngcairo size 900,540 noenhanced font 'sans,10'",
        f"set output {quote(png)}",
        f"set title {quote(title)}",
        f"set xlabel {quote(xlabel)}",
        f"set ylabel {quote(ylabel)}",
        *setup,
        "plot " + ", \\\n     ".join(plot),
        "",
    ])
    subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    return png
