import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Projector } from './projection/runner.js';
import type { Relay } from './relay/relay.js';
import type { Store } from './store/port.js';

/**
 * Prometheus metrics (`GET /metrics`). Counters are incremented where things happen (SMTP, API,
 * appends); lags and queue depth are measured when scraped.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly smtpConnections = new Counter({ name: 'mailtrail_smtp_connections_total', help: 'SMTP connections accepted', registers: [this.registry] });
  readonly smtpMessages = new Counter({
    name: 'mailtrail_smtp_messages_total',
    help: 'SMTP transactions by outcome (accepted/rejected) and reason',
    labelNames: ['outcome', 'reason'] as const,
    registers: [this.registry],
  });
  readonly smtpDataBytes = new Counter({ name: 'mailtrail_smtp_data_bytes_total', help: 'Bytes received in SMTP DATA', registers: [this.registry] });
  readonly appendSeconds = new Histogram({
    name: 'mailtrail_store_append_seconds',
    help: 'Time until an append is durable',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly apiSeconds = new Histogram({
    name: 'mailtrail_api_request_seconds',
    help: 'tRPC request latency by procedure and outcome',
    labelNames: ['procedure', 'outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'mailtrail_' });
  }

  /** Measures every append of `store` (the store object is changed in place). */
  instrumentStore(store: Store): void {
    const append = store.events.append.bind(store.events);
    store.events.append = async (...args) => {
      const end = this.appendSeconds.startTimer();
      try {
        return await append(...args);
      } finally {
        end();
      }
    };
  }

  watchProjectors(store: Store, projectors: Map<string, Projector>): void {
    new Gauge({
      name: 'mailtrail_projector_lag_events',
      help: 'Events in the log not yet applied to the view',
      labelNames: ['projector'] as const,
      registers: [this.registry],
      async collect() {
        const head = await store.events.head();
        for (const [name, r] of projectors) this.set({ projector: name }, Math.max(0, head - r.position));
      },
    });
    new Gauge({
      name: 'mailtrail_projector_lag_seconds',
      help: 'Age of the oldest event not yet applied to the view (0 when caught up)',
      labelNames: ['projector'] as const,
      registers: [this.registry],
      async collect() {
        for (const [name, r] of projectors) {
          const [next] = await store.events.readAll({ after: r.position, limit: 1 });
          this.set({ projector: name }, next ? Math.max(0, (Date.now() - Date.parse(next.recordedAt)) / 1000) : 0);
        }
      },
    });
  }

  watchRelay(store: Store, relay: Relay): void {
    new Gauge({
      name: 'mailtrail_relay_queue_depth',
      help: 'Sent mails with recipients still to deliver',
      registers: [this.registry],
      async collect() {
        this.set(await store.views.count('outbox', { status: 'pending' }));
      },
    });
    const seen = { delivered: 0, temporaryFailures: 0, permanentFailures: 0, bounces: 0 };
    new Counter({
      name: 'mailtrail_relay_deliveries_total',
      help: 'Outbound recipients by delivery outcome, and bounces sent back',
      labelNames: ['outcome'] as const,
      registers: [this.registry],
      collect() {
        for (const key of Object.keys(seen) as (keyof typeof seen)[]) {
          const delta = relay.stats[key] - seen[key];
          if (delta > 0) this.inc({ outcome: key }, delta);
          seen[key] = relay.stats[key];
        }
      },
    });
  }
}
