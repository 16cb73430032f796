// Confirmations before a change that is hard to undo (issue 19): a form carrying
// data-confirm="question" asks it before it is sent (role changes, removals in the console).
// No inline script: CSP script-src 'self'.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
