// A button that asks first, in a modal <dialog>: Retry, Cancel and Delete are not undone.
import { useRef, useState } from "preact/hooks";
import { html } from "../html.js";

export function ConfirmButton({ label, title, question, confirmLabel, onConfirm, kind = "secondary", disabled = false, testId }) {
  const dialog = useRef(null);
  const [busy, setBusy] = useState(false);
  const open = () => dialog.current?.showModal();
  const close = () => dialog.current?.close();
  const confirm = async () => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      setBusy(false);
      close();
    }
  };
  return html`
    <button class=${kind} disabled=${disabled} onClick=${open} data-testid=${testId}>${label}</button>
    <dialog ref=${dialog} data-testid=${`${testId}-dialog`}>
      <article>
        <header><strong>${title}</strong></header>
        <p>${question}</p>
        <footer>
          <button class="secondary outline" onClick=${close}>Keep it</button>
          <button class=${kind === "danger" ? "danger" : ""} aria-busy=${busy} onClick=${confirm} data-testid=${`${testId}-confirm`}>
            ${confirmLabel}
          </button>
        </footer>
      </article>
    </dialog>
  `;
}
