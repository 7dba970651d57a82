"""The dashboard in a real browser: headless Chromium driven over WebDriver (selenium and
chromium-driver), with the official OpenAI Python SDK as the key's client.

Run by tests/gateway_e2e.rs, which starts the gateway and passes, in the environment:
KEYGATE_URL (the gateway's origin), KEYGATE_ADMIN_KEY (the operator's management key),
KEYGATE_SCREENSHOTS (a directory for PNG screenshots of the main screens) and optionally
KEYGATE_CHROMEDRIVER (the chromedriver binary). Exits non-zero on any failure.

The flow: sign in; create a key and read it once from its dialog; use it through the OpenAI
SDK; see the request in the key's usage log and in its requests chart; revoke it in the
dashboard; see the SDK's next request refused with 401 revoked_api_key; and check that the
key's text is nowhere in the page, its inputs, its storage or its URL once the dialog closed.
"""

import os
import sys
import time

import openai
from openai import OpenAI
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

origin = os.environ["KEYGATE_URL"]
admin_key = os.environ["KEYGATE_ADMIN_KEY"]
shots = os.environ["KEYGATE_SCREENSHOTS"]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
             "--window-size=1280,900", "--force-device-scale-factor=1"]:
    options.add_argument(flag)
options.binary_location = os.environ.get("KEYGATE_CHROMIUM", "/usr/bin/chromium")
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
service = Service(executable_path=os.environ.get("KEYGATE_CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(options=options, service=service)
wait = WebDriverWait(driver, 10)


def find(selector):
    return driver.find_element(By.CSS_SELECTOR, selector)


def visible(selector):
    return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def shot(name, element=None):
    path = os.path.join(shots, f"dashboard-{name}.png")
    if element is None:
        driver.save_screenshot(path)
    else:
        element.screenshot(path)
    print(f"ok: screenshot {path}")


def everything_the_page_holds():
    """The DOM's markup, every form field's current value, both storages, cookies and the URL."""
    return driver.execute_script(
        """
        const values = [...document.querySelectorAll("input, textarea, select")].map((e) => e.value);
        return [document.documentElement.outerHTML, values.join("\\n"),
                JSON.stringify({...sessionStorage}), JSON.stringify({...localStorage}),
                document.cookie, location.href].join("\\n");
        """
    )


def check_console():
    """No CSP violation and no script error in the browser's console."""
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


try:
    # ---- sign in ------------------------------------------------------------------------------
    driver.get(f"{origin}/dashboard")
    visible("#sign-in-key")
    shot("sign-in")
    find("#sign-in-key").send_keys(admin_key)
    find("#sign-in-form button[type=submit]").click()
    visible("#app")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#keys tbody tr")) >= 1)
    assert admin_key not in driver.current_url
    assert driver.get_cookies() == [], driver.get_cookies()
    print("ok: signed in; the key is in no URL and no cookie")

    # ---- create a key; read it once -------------------------------------------------------------
    find("#new-key").click()
    visible("#create-dialog")
    form = find("#create-form")
    form.find_element(By.NAME, "name").send_keys("browser test")
    form.find_element(By.NAME, "allowed_models").send_keys("gpt-4o-mini, *:free")
    form.find_element(By.NAME, "rpm").send_keys("120")
    form.find_element(By.NAME, "cap_usd").send_keys("0.00001")
    form.find_element(By.NAME, "spend_alerts").send_keys("50, 80, 100")
    shot("create", find("#create-dialog"))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    visible("#secret-dialog")
    wait.until(lambda d: d.find_element(By.ID, "secret-value").get_attribute("value"))
    token = find("#secret-value").get_attribute("value")
    assert token.startswith("aistats_v1_sk_"), "the dialog shows the new key"
    kid = token.split("_")[3]
    find("#copy-secret").click()
    wait.until(lambda d: d.find_element(By.ID, "copy-status").text == "Copied.")
    find("#secret-done").click()
    wait.until(ec.invisibility_of_element_located((By.ID, "secret-dialog")))
    held = everything_the_page_holds()
    assert token not in held and token[-20:] not in held, "the key stays in the page after its dialog closed"
    print(f"ok: created key {kid}, shown once, gone from the page once the dialog closed")

    # ---- use it through the official OpenAI SDK -------------------------------------------------
    client = OpenAI(base_url=f"{origin}/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from the browser test"}], max_tokens=64
    )
    assert reply.usage.total_tokens > 0
    print(f"ok: the SDK's chat went through ({reply.usage.total_tokens} tokens)")

    # ---- the request in the key's log and chart -------------------------------------------------
    row = f"#keys tbody tr[data-id='{kid}']"
    visible(row).click()
    visible("#key-detail")
    deadline = time.monotonic() + 10
    while True:  # the gateway writes its log a few times a second
        rows = driver.find_elements(By.CSS_SELECTOR, "#log tbody tr[data-outcome='ok']")
        if rows:
            break
        assert time.monotonic() < deadline, "the request never appeared in the key's log"
        time.sleep(0.3)
        find("#close-detail").click()
        find(row).click()
        visible("#key-detail")
    cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "ok" and cells[2] == "200" and cells[3] == "chat.completions" and cells[4] == "gpt-4o-mini", cells
    bars = driver.find_elements(By.CSS_SELECTOR, "svg[data-chart='requests'] rect.bar")
    assert len(bars) == 14, len(bars)
    assert bars[-1].get_attribute("data-value") == "1", [b.get_attribute("data-value") for b in bars]
    tokens = driver.find_elements(By.CSS_SELECTOR, "svg[data-chart='tokens'] rect.bar")
    assert int(tokens[-1].get_attribute("data-value")) == reply.usage.total_tokens
    wait.until(lambda d: "100% of the month cap" in d.find_element(By.ID, "key-alerts").text)
    print("ok: the request is in the key's log, its charts and its spend alerts")
    driver.set_window_size(1280, 1500)
    shot("key", find("#key-detail"))
    driver.set_window_size(1280, 900)

    # ---- edit: a change goes through the management API -------------------------------------------
    edit = find("#edit-form")
    edit.find_element(By.NAME, "tpm").send_keys("100000")
    edit.find_element(By.NAME, "expires_at").send_keys("2099-01-01T00:00:00Z")
    edit.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "notice").text.startswith("Saved"))
    assert "expires_at" in find("#notice").text and "rate_limit" in find("#notice").text, find("#notice").text
    assert find("#edit-form").find_element(By.NAME, "tpm").get_attribute("value") == "100000"
    print("ok: edited the key's limits and expiry")

    # ---- revoke in the dashboard; the SDK's next request is refused -----------------------------
    find("#revoke").click()
    wait.until(lambda d: d.find_element(By.ID, "revoke").get_attribute("data-armed") == "1")
    find("#revoke").click()
    wait.until(lambda d: "revoked" in d.find_element(By.ID, "detail-title").text)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} td.status").text == "revoked")
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
        raise AssertionError("a revoked key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "revoked_api_key", (e.status_code, e.code)
    print("ok: revoked in the dashboard; the next request is 401 revoked_api_key")

    # ---- the list and the alerts --------------------------------------------------------------------
    find("#close-detail").click()
    shot("keys")
    find(".tabs button[data-view='alerts']").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")) >= 3)
    shot("alerts")

    held = everything_the_page_holds()
    assert token not in held and token[-20:] not in held, "the key came back into the page"
    check_console()
    print("dashboard browser test: all checks passed")
finally:
    try:
        if sys.exc_info()[0] is not None:
            driver.save_screenshot(os.path.join(shots, "dashboard-failure.png"))
            print(driver.get_log("browser"), file=sys.stderr)
    finally:
        driver.quit()
