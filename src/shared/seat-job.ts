/**
 * The data of a seat job (queue SEATS_QUEUE_NAME): the session it seats a
 * worker in. Everything else a worker needs is in the run spec.
 */
import { z } from "zod";

/** Strict schema of a seat job's data: anything else is refused by the worker. */
export const seatJobSchema = z
  .object({
    /** The coordinator session (run spec `session`) the seat belongs to. */
    session: z.string().regex(/^[0-9a-f]{16}$/),
  })
  .strict();

/** A seat job's data. */
export type SeatJob = z.infer<typeof seatJobSchema>;
