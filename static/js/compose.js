// Compose: a click on an annuaire suggestion adds its address to the « À » field, then the
// recipient check runs again (the field's change event). No inline script: CSP script-src 'self'.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest(".suggestion");
  if (!button) return;
  const box = button.closest("[data-target]");
  const field = box && document.getElementById(box.dataset.target);
  if (!field) return;
  const addresses = field.value.split(/[,;]/).map((a) => a.trim()).filter(Boolean);
  if (!addresses.includes(button.dataset.address)) addresses.push(button.dataset.address);
  field.value = addresses.join(", ");
  field.dispatchEvent(new Event("change", { bubbles: true }));
  const query = box.querySelector("input[type=search]");
  if (query) query.value = "";
  const list = box.querySelector("#suggestions");
  if (list) list.replaceChildren();
  field.focus();
});
