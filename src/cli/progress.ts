/** A one-line progress bar on stderr; on a non-TTY (CI, pipes) it prints a line every 10 %. */
export class Progress {
  private lastPct = -1;
  private readonly started = Date.now();

  constructor(
    private readonly label: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  update(done: number, total: number): void {
    const pct = total === 0 ? 100 : Math.min(100, Math.floor((done / total) * 100));
    const secs = (Date.now() - this.started) / 1000;
    const rate = secs > 0 ? Math.round(done / secs) : 0;
    if (this.out.isTTY) {
      const width = 30;
      const filled = Math.round((pct / 100) * width);
      this.out.write(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}% ${done}/${total} ${rate}/s`);
    } else if (pct >= this.lastPct + 10 || (pct === 100 && this.lastPct !== 100)) {
      this.lastPct = pct;
      this.out.write(`${this.label}: ${pct}% (${done}/${total}, ${rate}/s)\n`);
    }
  }

  done(): void {
    if (this.out.isTTY) this.out.write('\n');
  }
}
