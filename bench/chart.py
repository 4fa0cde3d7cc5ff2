"""Messages delivered over time for the SMTP scenario, pyqmail beside Postfix:
run by the bench venv's python (matplotlib lives only there).
    chart.py results.json out.png"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"pyqmail": "tab:blue", "pyqmail-fast": "tab:green", "postfix": "tab:orange"}


def median_run(runs):
    """The run whose figure is the median one."""
    ordered = sorted(runs, key=lambda r: r["value"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    with open(sys.argv[1]) as f:
        results = json.load(f)
    shown = [s for s in results["scenarios"] if s["scenario"] in ("smtp-s10", "smtp-s10-big")]
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], shown):
        for name, figure in scenario["figures"].items():
            run = median_run(figure["detail"])
            xs = [p[0] for p in run["timeline"]]
            ys = [p[1] for p in run["timeline"]]
            ax.step(xs, ys, where="post", color=COLOURS.get(name),
                    label="%s: %.0f msg/s (median of %d)" % (name, figure["median"], len(figure["runs"])))
        ax.set_title(scenario["title"].split(" (")[0], fontsize=9)
        ax.set_xlabel("seconds since the first connection")
        ax.set_ylabel("messages in Maildir/new")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    run = results["run"]
    fig.suptitle("pyqmail vs Postfix %s, %s, %d cores, %s" % (run["postfix"], run["date"], run["cores"],
                                                               run["filesystem"].split(" ")[0]), fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
