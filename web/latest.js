// Live pages ask again on every event: answers can come back out of order, and only the latest
// request's may be shown (a slow earlier one must not overwrite it).
import { useRef } from "preact/hooks";

/** A function that runs `request` and hands its answer on only when no later request was made since. */
export function useLatestRequest() {
  const counter = useRef(0);
  return (request, onAnswer, onError) => {
    const asked = ++counter.current;
    request.then(
      (answer) => {
        if (asked === counter.current) onAnswer(answer);
      },
      (err) => {
        if (asked === counter.current) onError(err);
      },
    );
  };
}
