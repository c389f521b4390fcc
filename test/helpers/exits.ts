import type { ProcessExitEvent, UnsequencedExit } from '../../src/core/domain.js';
import type { ExitExchange } from '../../src/core/exit-exchange.js';

/** Numbers and delivers an exit at once, as the supervisor does once it has recorded it. */
export function publishExit(exchange: ExitExchange, exit: UnsequencedExit): ProcessExitEvent {
  const event = exchange.assign(exit);
  exchange.deliver(event);
  return event;
}
