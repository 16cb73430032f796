// Compose, writing safely. No inline script: CSP script-src 'self'.
// - Enter in a one-line field never sends (a health message cannot be recalled): sending
//   needs « Envoyer » or Ctrl+Entrée; « Envoyer » without a subject asks first.
// - The annuaire field is an ARIA combobox (WAI-ARIA APG, "Combobox with listbox popup"):
//   arrow keys move in the suggestions, Enter adds the highlighted one to À, Cc or Cci.
// - The message saves itself as a draft every few seconds when it changed, and on leaving;
//   leaving a message changed since its last save asks first.
"use strict";
(() => {
  const form = document.querySelector("form.compose__form");
  if (!form) return;
  const query = document.getElementById("annuaire-q");
  const list = document.getElementById("suggestions");
  const subject = form.querySelector("[name=objet]");
  const uidField = form.querySelector("[name=brouillon_uid]");
  const status = document.getElementById("brouillon-etat");

  // --- The annuaire combobox -------------------------------------------------------------
  let active = -1;
  const options = () => Array.from(list.querySelectorAll("[role=option]"));
  const highlight = (index) => {
    const all = options();
    active = all.length ? (index + all.length) % all.length : -1;
    all.forEach((o, i) => o.setAttribute("aria-selected", i === active ? "true" : "false"));
    if (active >= 0) {
      query.setAttribute("aria-activedescendant", all[active].id);
      all[active].scrollIntoView({ block: "nearest" });
    } else {
      query.removeAttribute("aria-activedescendant");
    }
  };
  const close = () => {
    list.replaceChildren();
    active = -1;
    query.setAttribute("aria-expanded", "false");
    query.removeAttribute("aria-activedescendant");
  };
  const pick = (option) => {
    const button = option.querySelector(".suggestion");
    const choice = form.querySelector("input[name=ajouter_en]:checked");
    const field = document.getElementById(choice ? choice.value : "id_a");
    if (!button || !field) return;
    const addresses = field.value.split(/[,;]/).map((a) => a.trim()).filter(Boolean);
    if (!addresses.includes(button.dataset.address)) addresses.push(button.dataset.address);
    field.value = addresses.join(", ");
    field.dispatchEvent(new Event("change", { bubbles: true }));
    query.value = "";
    close();
    query.focus();
  };
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.target !== list) return;
    active = -1;
    query.setAttribute("aria-expanded", options().length ? "true" : "false");
  });
  list.addEventListener("click", (event) => {
    const option = event.target.closest("[role=option]");
    if (option) pick(option);
  });
  query.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const down = event.key === "ArrowDown";
      // From the field, down goes to the first suggestion and up to the last; both wrap.
      if (options().length) highlight(active < 0 ? (down ? 0 : -1) : active + (down ? 1 : -1));
    } else if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      if (active >= 0) pick(options()[active]);
    } else if (event.key === "Escape") {
      close();
    }
  });

  // --- Enter never sends; Ctrl+Entrée does; no subject asks first ---------------------------
  const send = form.querySelector("button[name=action][value=envoyer]");
  form.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.isComposing) return;
    if (event.ctrlKey || event.metaKey) {
      event.preventDefault();
      form.requestSubmit(send);
    } else if (event.target instanceof HTMLInputElement) {
      event.preventDefault(); // implicit submission (HTML §4.10.21.2) is never a send
    }
  });

  // --- Drafts that save themselves -----------------------------------------------------------
  const SKIP = new Set(["pieces", "q", "ajouter_en", "brouillon_uid", "csrfmiddlewaretoken"]);
  const snapshot = () =>
    JSON.stringify(
      Array.from(new FormData(form).entries()).filter(
        ([name, value]) => !SKIP.has(name) && typeof value === "string",
      ),
    );
  const draftData = () => {
    const data = new FormData(form);
    data.delete("pieces"); // files go with « Enregistrer le brouillon » or the send
    data.set("action", "brouillon");
    return data;
  };
  // A page shown again after an error holds what the server did not keep: unsaved.
  let saved = form.hasAttribute("data-unsaved") ? "" : snapshot();
  let saving = null;
  let leaving = false;
  const changed = () => snapshot() !== saved;
  const save = (keepalive) => {
    if (saving || leaving || !changed()) return saving;
    const state = snapshot();
    saving = fetch(window.location.href, {
      method: "POST",
      body: draftData(),
      headers: { "X-Brouillon-Auto": "1" },
      credentials: "same-origin",
      keepalive,
    })
      .then((response) => (response.ok ? response.json() : null))
      .then((answer) => {
        if (!answer || !answer.uid) return;
        uidField.value = answer.uid;
        saved = state;
        const now = new Date().toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit" });
        if (status) status.textContent = `Brouillon enregistré à ${now}`;
      })
      .catch(() => {})
      .finally(() => {
        saving = null;
      });
    return saving;
  };
  window.setInterval(() => save(false), Number(form.dataset.autosaveMs) || 10000);
  window.addEventListener("pagehide", () => save(true));
  window.addEventListener("beforeunload", (event) => {
    if (leaving || !changed()) return;
    event.preventDefault();
    event.returnValue = ""; // Chromium still wants it to show the question
  });

  let noSubjectConfirmed = false;
  // A health document writes the subject itself (Référentiel #2 ECO.2.1.3): nothing to ask.
  const healthDocument = form.querySelector("[name=doc_pdf]");
  const keptDocument = form.querySelector("[name=doc_du_brouillon]"); // a resumed draft's PDF
  form.addEventListener("submit", (event) => {
    const sending = !event.submitter || event.submitter.value === "envoyer";
    const documentSubject =
      (healthDocument && healthDocument.files && healthDocument.files.length) ||
      (keptDocument && keptDocument.checked);
    if (sending && !subject.value.trim() && !documentSubject && !noSubjectConfirmed) {
      if (!window.confirm("Ce message n'a pas d'objet. L'envoyer quand même ?")) {
        event.preventDefault();
        return;
      }
      noSubjectConfirmed = true;
    }
    if (saving) {
      // The draft's UID changes when this save ends: send with the new one.
      event.preventDefault();
      const submitter = event.submitter;
      saving.then(() => form.requestSubmit(submitter));
      return;
    }
    leaving = true;
  });
})();
