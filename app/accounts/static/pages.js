// The pages for mailed links (app/accounts/pages.py): reset a password, confirm an account,
// confirm a new email address. Everything goes through the JSON API; nothing is written into
// the page as HTML (textContent only), so no value from the URL or the API can run as script.
"use strict";

(() => {
  const body = document.body;
  const apiRoot = body.dataset.apiRoot || "";
  const page = body.dataset.page;

  // The token leaves the address bar before anything else happens: it must not stay in the
  // history, a bookmark, a screenshot or a shared URL. The login rides in the fragment.
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const login = new URLSearchParams(window.location.hash.slice(1)).get("login") || "";
  if (window.location.search || window.location.hash) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  const byId = (id) => document.getElementById(id);
  const message = byId("message");
  let session = null;

  function show(stepId) {
    for (const step of document.querySelectorAll("[data-step]")) {
      step.hidden = step.id !== stepId;
    }
  }

  function say(text, kind) {
    message.textContent = text;
    message.className = "message " + kind;
    message.hidden = !text;
  }

  async function call(method, path, data, accessToken) {
    const headers = { Accept: "application/json" };
    if (data !== undefined) headers["Content-Type"] = "application/json";
    if (accessToken) headers.Authorization = "Bearer " + accessToken;
    let response;
    try {
      response = await fetch(apiRoot + path, {
        method,
        headers,
        body: data === undefined ? undefined : JSON.stringify(data),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      return { ok: false, status: 0, body: null };
    }
    let payload = null;
    if (response.status !== 204) {
      try {
        payload = await response.json();
      } catch (error) {
        payload = null;
      }
    }
    return { ok: response.ok, status: response.status, body: payload };
  }

  // The API's own words (`detail`) when it gave some.
  function problem(result) {
    if (result.body && typeof result.body.detail === "string") return result.body.detail;
    if (result.status === 0) return "The service could not be reached; try again.";
    return "Something went wrong (HTTP " + result.status + "); try again.";
  }

  // While a request runs, the form cannot be sent again (a token works once).
  async function busy(element, work) {
    const buttons = element.querySelectorAll("button");
    if (element.tagName === "BUTTON") element.disabled = true;
    for (const button of buttons) button.disabled = true;
    try {
      await work();
    } finally {
      if (element.tagName === "BUTTON") element.disabled = false;
      for (const button of buttons) button.disabled = false;
    }
  }

  function onSubmit(formId, handler) {
    const form = byId(formId);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(form, () => handler(form));
    });
  }

  async function signIn(loginValue, password) {
    const result = await call("POST", "/accounts/login", { login: loginValue, password });
    if (!result.ok) {
      say(problem(result), "error");
      byId("sign-in-login").value = loginValue;
      show("sign-in");
      return;
    }
    const profile = await call("GET", "/accounts/profile", undefined, result.body.access_token);
    if (!profile.ok) {
      say(problem(profile), "error");
      return;
    }
    session = result.body;
    byId("signed-in-name").textContent = profile.body.username;
    byId("signed-in-email").textContent = profile.body.email;
    show("signed-in");
  }

  onSubmit("sign-in-form", async (form) => {
    say("", "");
    await signIn(form.elements.login.value, form.elements.password.value);
  });

  byId("sign-out").addEventListener("click", (event) =>
    busy(event.currentTarget, async () => {
      const result = await call("POST", "/accounts/logout", undefined, session.access_token);
      if (!result.ok && result.status !== 401) {
        say(problem(result), "error");
        return;
      }
      session = null;
      say("", "");
      show("signed-out");
    }),
  );

  let linkFormReady = false;
  function offerNewLink(path) {
    byId("request-link-login").value = login;
    show("request-link");
    if (linkFormReady) return;
    linkFormReady = true;
    onSubmit("request-link-form", async (form) => {
      const result = await call("POST", path, { login: form.elements.login.value });
      say(result.ok ? result.body.detail : problem(result), result.ok ? "success" : "error");
    });
  }

  function resetPassword() {
    const resetLink = "/accounts/send-reset-password-link";
    if (!token) {
      say("This link is incomplete: ask for a new one below.", "error");
      offerNewLink(resetLink);
      return;
    }
    byId("reset-login").value = login;
    show("reset");
    onSubmit("reset-form", async (form) => {
      const password = form.elements.password.value;
      if (password !== form.elements.password_confirm.value) {
        say("The two passwords differ; type the same one twice.", "error");
        return;
      }
      const result = await call("POST", "/accounts/reset-password", {
        token,
        password,
        password_confirm: password,
      });
      if (!result.ok) {
        say(problem(result), "error");
        if (result.body && result.body.code === "invalid_link_token") offerNewLink(resetLink);
        return;
      }
      byId("title").textContent = "Your password is changed";
      say("Your password is changed; every other session was signed out.", "success");
      await signIn(form.elements.login.value, password);
    });
  }

  function verifyRegistration() {
    const resendLink = "/accounts/resend-verification";
    if (!token) {
      say("This link is incomplete: ask for a new one below.", "error");
      offerNewLink(resendLink);
      return;
    }
    show("confirm");
    const button = byId("confirm-button");
    button.addEventListener("click", () =>
      busy(button, async () => {
        const result = await call("POST", "/accounts/verify-registration", { token });
        if (!result.ok) {
          say(problem(result), "error");
          if (result.body && result.body.code === "invalid_link_token") offerNewLink(resendLink);
          return;
        }
        byId("title").textContent = "Your account is confirmed";
        say("Your account is confirmed: sign in with your password.", "success");
        byId("sign-in-login").value = login;
        show("sign-in");
        byId(login ? "sign-in-password" : "sign-in-login").focus();
      }),
    );
  }

  function verifyEmail() {
    if (!token) {
      say("This link is incomplete: change the address again to get a new one.", "error");
      return;
    }
    show("confirm");
    const button = byId("confirm-button");
    button.addEventListener("click", () =>
      busy(button, async () => {
        const result = await call("POST", "/accounts/verify-email", { token });
        if (!result.ok) {
          say(problem(result), "error");
          return;
        }
        byId("title").textContent = "Your new address is confirmed";
        say("", "");
        show("done");
      }),
    );
  }

  const pages = {
    "reset-password": resetPassword,
    "verify-registration": verifyRegistration,
    "verify-email": verifyEmail,
  };
  pages[page]();
})();
